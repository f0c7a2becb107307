"""Preflight: what each stage of a profile will cost before any weight is downloaded.

Per stage: weight memory, peak activation memory at the chunking `run.memory_budget_gb` (or the explicit
`run:` limits) gives, covariance bytes on disk, statistics tokens, and GPU-hours from FLOP counts at an
assumed fraction of the GPU's peak (EFFICIENCY). Editing hours are upper bounds: every request runs every
optimisation step (early stopping ends 12–34% of them sooner on SmolLM2). `--gpu-mem` names the stages
that do not fit and what to change. The memory numbers come from `jeepkit.memory`, the same model that sizes
the chunks, and are checked against measured peaks on SmolLM2 (`benchmarks/preflight_check.py`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from .errors import ConfigError
from .memory import (GB, BYTES, Dims, Workload, covariance_bytes, eval_row_bytes, forward_bytes, key_row_bytes,
                     known_dims, logits_bytes, plan, probe_row_bytes, target_request_bytes, train_bytes)
from .params import method_hparams, need
from .profiles import expand_runs
from .runtime import Runtime

# Peak dense throughput (FLOP/s) by precision; editing runs small batches, hence EFFICIENCY of that peak.
# `bandwidth` (bytes/s of device memory): a decoding step reads every weight once per batch, so sampling
# and greedy decoding are bound by it rather than by FLOPs.
GPUS = {"a100": {"half": 312e12, "fp32": 19.5e12, "fp64": 19.5e12, "mem_gb": 80, "bandwidth": 2.0e12},
        "h100": {"half": 989e12, "fp32": 67e12, "fp64": 67e12, "mem_gb": 80, "bandwidth": 3.35e12}}
EFFICIENCY = 0.3
# Tokens per statistics document: wikitext paragraphs are short (MEMIT's reference uses whole articles up to
# max_length); "self" samples are exactly max_length.
WIKITEXT_DOC_TOKENS = 128
ROME_TEMPLATES = 21
EVAL_ROWS = {"counterfact": 26, "mcf": 26, "zsre": 3}  # teacher-forced sequences per case


@dataclass
class StageCost:
    stage: str
    weights: float  # bytes
    peak: float  # bytes on the device: weights + fixed buffers + activations
    hours: float  # statistics / editing
    disk: float = 0.0  # bytes written (statistics)
    tokens: int = 0  # statistics tokens
    notes: list[str] = field(default_factory=list)
    eval_hours: float = 0.0

    @property
    def total(self) -> float:
        return self.hours + self.eval_hours


PREFIX_TOKENS = 10  # a sampled context prefix (engine.sample_prefixes)


def workload(params: dict[str, Any], dataset: str) -> Workload:
    """Token lengths from the dataset when the data stage has run (tokenised with the prepared model's
    tokenizer when it is there, else ~4 characters a token); the paper-scale defaults otherwise."""
    import json

    from .params import paths

    p = paths(params)
    f = p["datasets"] / f"{dataset}.jsonl"
    if not f.exists():
        return Workload()
    recs = [json.loads(l) for l in f.read_text(encoding="utf-8").splitlines()[:500] if l.strip()]
    if not recs:
        return Workload()
    tok = None
    if (p["model"] / "tokenizer.json").exists():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(p["model"] / "tokenizer.json"))

    def n_tok(text: str) -> int:
        return len(tok.encode(text).ids) if tok is not None else max(1, len(text) // 4)

    full = sorted(n_tok(r["prompt"].replace("{}", r["subject"]) + " " + r["target_new"]) for r in recs)
    ans = sorted(n_tok(" " + r["target_new"]) for r in recs)
    seq = full[int(0.9 * (len(full) - 1))] + PREFIX_TOKENS + 1  # a padded batch is as long as its longest rows
    per_case = [2 * (1 + len(r.get("paraphrases", []))) + 2 * len(r.get("locality", [])) for r in recs]
    return Workload(seq_len=seq, answer_tokens=ans[len(ans) // 2], eval_rows_per_case=round(sum(per_case) / len(recs)))


def generation_prompts_per_case(params: dict[str, Any], dataset: str) -> float:
    """Mean MEMIT generation prompts per record of the built dataset (official CounterFact: 10); 0 when the data
    stage has not run or the records have none."""
    from .params import paths

    f = paths(params)["datasets"] / f"{dataset}.jsonl"
    if not f.exists():
        return 0.0
    recs = [json.loads(l) for l in f.read_text(encoding="utf-8").splitlines()[:500] if l.strip()]
    return sum(len(r.get("generation_prompts") or []) for r in recs) / len(recs) if recs else 0.0


def _decode_seconds(rows: float, new_tokens: int, prompt_tokens: int, d: Dims, g, prec: str, batch: int) -> float:
    """`rows` prompts of `prompt_tokens` continued by `new_tokens` with a key/value cache, `batch` at a time: one
    prompt pass each, then per step the larger of reading every weight and the step's FLOPs."""
    if rows <= 0 or new_tokens <= 0:
        return 0.0
    batches = -(-int(rows) // max(1, batch))
    prompt = _flops_seconds(rows * prompt_tokens * 2 * d.n_params, g, prec)
    step = max(d.n_params * d.bytes / g["bandwidth"], _flops_seconds(min(rows, batch) * 2 * d.n_params, g, prec))
    return prompt + batches * new_tokens * step


def _evaluation_extras(r: dict[str, Any], params: dict[str, Any], d: Dims, g, prec: str, rt: Runtime,
                       w: Workload, n: int, batch: int, prompts_per_case: float | None = None) -> tuple[float, list[str]]:
    """Seconds of what a run scores beyond teacher forcing: greedy free generation of every probe, MEMIT's
    sampled generation prompts (batch runs on data that has them), held-out perplexity (`edit.drift`). Zero for
    a stage that scores teacher-forced only. `prompts_per_case`: `generation_prompts_per_case` of the run's
    dataset when the caller has it (read once per dataset), else read here."""
    from .data.registry import DATASETS
    from .editing.run import method_spec
    from .runners.edit import generation_tokens

    stage, ds = r["stage"], r["dataset"]
    if stage.startswith("scaling@") or r.get("scores") == "teacher_forced":
        return 0.0, []
    sequential = stage.startswith("sequential@")
    kind = DATASETS[ds].kind if ds in DATASETS else None
    tokens = generation_tokens(params, kind) if kind is not None else 0
    probes = (w.eval_rows_per_case or EVAL_ROWS.get(ds, 26)) / 2  # each probe is scored for two answers
    greedy_cases = (batch + n) if sequential else n  # sequential: the one-batch model and the last one
    seconds = _decode_seconds(greedy_cases * probes, tokens, w.seq_len, d, g, prec, rt.decode_rows)
    notes = [f"free generation {tokens} tokens"] if tokens else []
    gen = params.get("generation") or {}
    per_case = 0.0 if sequential else (generation_prompts_per_case(params, ds) if prompts_per_case is None
                                       else prompts_per_case)
    if per_case and int(gen.get("max_length") or 0) > 0:
        length = int(gen["max_length"])
        seconds += _decode_seconds(n * per_case, length - min(length, w.seq_len // 2), min(length, w.seq_len // 2),
                                   d, g, prec, rt.decode_rows)
        notes.append(f"{per_case:g} generation prompts per case up to {length} tokens")
    if (params.get("edit") or {}).get("drift") and params.get("drift"):
        dr = params["drift"]
        # after each chunk (batch runs) or after the first and the last batch (sequential); the unedited model's
        # pass is made once per model and held-out text (`drift.cached_unedited_perplexity`), not per stage, and an
        # unedited method reuses it (as the batch runner does)
        unedited = method_spec(r["method"]).kind == "unedited"
        passes = 0 if unedited else 2 if sequential else max(1, -(-n // max(1, batch)))
        seconds += _flops_seconds(passes * int(dr["n_docs"]) * int(dr["max_length"]) * 2 * d.n_params, g, prec)
    return seconds, notes


def _flops_seconds(flops: float, gpu: dict[str, float], precision: str) -> float:
    return flops / (gpu[precision] * EFFICIENCY)


def _precision(dtype: str) -> str:
    return "fp32" if dtype == "float32" else "half"


def estimate(params: dict[str, Any], dims: Dims | None = None, gpu: str = "a100") -> list[StageCost]:
    """A StageCost for prepare/stats/probe and every edit run of the profile."""
    key = need(params, "model.key")
    d = dims or known_dims(key, params["model"].get("dtype", "float32"))
    g = GPUS[gpu]
    prec = _precision(d.dtype)
    run = dict(params.get("run") or {})
    budget = run.pop("memory_budget_gb", None)
    base = Runtime(**{k: v for k, v in run.items() if v is not None})
    rt = plan(d, budget * GB, base, params) if budget else base
    w = workload(params, (params.get("probe") or {}).get("dataset", "counterfact"))
    weights = d.n_params * d.bytes
    out = [StageCost("prepare_model", weights, 0.0, 0.0, notes=["writes a pointer (hf) or converted weights"])]

    s = need(params, "stats")
    # mlp_out reads the MLP's intermediate activations, attn_out the attention's (hidden-sized) output
    d_ks = [d.intermediate if role == "mlp_out" else d.hidden for role in s.get("modules", ["mlp_out"])
            for _ in s["layers"]]
    doc = min(int(s["max_length"]), WIKITEXT_DOC_TOKENS) if s["corpus"] == "wikitext" else int(s["max_length"])
    tokens = int(s["n_samples"]) * doc
    acc = BYTES.get(s.get("dtype", "float32"), 4)
    deepest = max(s["layers"])
    flops = 2 * d.params_through(deepest) * tokens + sum(2 * k * k for k in d_ks) * tokens
    per_token = forward_bytes(d, 1, min(doc, 2048)) + sum(d_ks) * (d.bytes + 4)
    out.append(StageCost("stats", weights, weights + sum(k * k for k in d_ks) * acc + rt.stats_tokens * per_token,
                         _flops_seconds(flops, g, prec) / 3600, disk=sum(k * k * acc for k in d_ks),
                         tokens=tokens, notes=[f"{len(d_ks)} modules, {rt.stats_tokens} tokens per pass"]))

    p = params.get("probe") or {}
    n_probe = int(p.get("n_records", 100))
    probe_flops = n_probe * w.seq_len * 2 * d.n_params + n_probe * (d.n_layers + 1) * 2 * 2 * d.vocab * d.hidden
    # per record: float64 lens logits of every layer at two positions, ~6 copies (softmax, sort values and
    # indices, rank comparisons)
    probe_peak = weights + rt.probe_rows * probe_row_bytes(d, w) + (d.n_layers + 1) * 2 * d.vocab * 8 * 6
    for name in ("probe", "probe_final_norm"):
        out.append(StageCost(name, weights, probe_peak, _flops_seconds(probe_flops, g, prec) / 3600))

    e = need(params, "edit")
    loads = {ds: workload(params, ds) for ds in {r["dataset"] for r in expand_runs(params)}}
    prompts = {ds: generation_prompts_per_case(params, ds) for ds in loads}  # each dataset file read once
    seen: set = set()  # (dataset, seed, objective) already optimised by an earlier stage: its targets are cached
    for r in expand_runs(params):
        n = int(r.get("n_edits") or e["n_edits"])
        out.append(_edit_cost(r, params, d, g, prec, rt, loads[r["dataset"]], weights, n,
                              int(r.get("batch") or e.get("batch_size") or n), seen, prompts[r["dataset"]]))
    return out


def _edit_cost(r: dict[str, Any], params, d: Dims, g, prec: str, rt: Runtime, w: Workload, weights: float,
               n: int, batch: int, seen: set | None = None, prompts_per_case: float | None = None) -> StageCost:
    from .editing.run import method_spec

    method, ds = r["method"], r["dataset"]
    spec = method_spec(method)
    extra_s, extra_notes = _evaluation_extras(r, params, d, g, prec, rt, w, n, batch, prompts_per_case)
    if spec.kind == "unedited":
        teacher = _flops_seconds(n * (w.eval_rows_per_case or EVAL_ROWS.get(ds, 26)) * w.seq_len * 2 * d.n_params,
                                 g, prec)
        return StageCost(r["stage"], weights, weights + rt.eval_rows * eval_row_bytes(d, w), 0.0,
                         eval_hours=(teacher + extra_s) / 3600, notes=extra_notes)
    hp = spec.hparams.from_dict({**method_hparams(params, method, ds), **r["overrides"]})
    points = [(n, batch)]
    seen = set() if seen is None else seen
    if r["stage"].startswith("scaling@"):
        from .runners.edit import scaling_sizes

        sc = params.get("scaling") or {}
        m_max = int(sc.get("max_edits", n))
        points = [(m * min(int(sc.get("max_chunks", 4)), m_max // m), m) for m in scaling_sizes(m_max)]
    d_k = d.intermediate
    needs = spec.statistics(hp)
    layers = [l for _, l in needs]
    scored = r.get("evaluated") or sum(p_n for p_n, _ in points)  # a sequential run scores at every checkpoint
    eval_flops = scored * (w.eval_rows_per_case or EVAL_ROWS.get(ds, 26)) * w.seq_len * 2 * d.n_params
    eval_h = (_flops_seconds(eval_flops, g, prec) + extra_s) / 3600
    notes: list[str] = list(extra_notes)
    if spec.kind == "sequential":  # ROME
        steps = int(hp.steps)
        rows = ROME_TEMPLATES + 1
        wl = replace(w, rows_per_request=rows)
        t = n * steps * rows * w.seq_len * (2 * d.n_params + 4 * (d.n_params - d.params_through(int(hp.layer))))
        keys = n * 2 * rows * w.seq_len * 2 * d.params_through(int(hp.layer))
        peak = weights + target_request_bytes(d, wl, int(hp.layer)) + 2 * covariance_bytes(d_k, "float64")
        notes.append("sequential: one request at a time")
        flops = t + keys
    elif method == "ft_wd":
        epochs = int(hp.epochs)
        layer = int(hp.layer)
        flops = epochs * n * w.seq_len * (2 * d.n_params + 4 * (d.n_params - d.params_through(layer - 1)))
        peak = weights + 3 * 4 * d.layer_params + int(hp.batch_size) * w.seq_len * \
            (d.n_layers - layer) * 16 * d.hidden * d.bytes
        notes.append("Adam state of one layer in float32")
    elif spec.passes is not None:  # other gradient methods: their own count of forward + backward passes
        n_pass = spec.passes(hp, n, d.n_layers)
        flops = n_pass * w.seq_len * 6 * d.n_params
        peak = weights + rt.grad_rows * (train_bytes(d, w.seq_len, w.seq_len, 0) + logits_bytes(d, w.answer_tokens, grad=True))
        notes.append(f"{n_pass:.0f} forward+backward passes, {rt.grad_rows} per batch")
    elif spec.kind != "closed_form":
        raise ConfigError(f"preflight: no cost model for method {method!r} (kind {spec.kind}); "
                          "give its MethodSpec `passes`")
    else:
        steps = int(hp.steps)
        lowest = min(layers) if layers else 0
        objectives = spec.objectives(hp)
        todo = []
        for obj, cacheable in objectives:
            # the target cache key holds the method (its module's code), the request, seed and objective
            key = (method, r["dataset"], r["stage"].rsplit("-", 1)[-1], json.dumps(obj.describe(), sort_keys=True))
            fresh_model = not r["stage"].startswith("sequential@")  # later batches meet an edited model
            if not (cacheable and fresh_model and key in seen):
                todo.append(obj)
            if cacheable and fresh_model:
                seen.add(key)
        cached = len(todo) < len(objectives)
        lowest_delta = min((x.layer for o in todo for x in o.deltas), default=d.n_layers)
        t = sum(n * steps * w.rows_per_request * w.seq_len *
                (2 * d.n_params + 4 * (d.n_params - d.params_through(min(x.layer for x in o.deltas)))) for o in todo)
        keys = solve = 0.0
        for p_n, p_b in points:
            keys += p_n * (w.rows_per_request - 1) * w.seq_len * 2 * key_read_params(d, layers)
            solve += max(1, -(-p_n // p_b)) * len(layers) * (2 / 3 * d_k ** 3 + 2 * d_k * d_k * min(p_b, p_n)
                                                             + 2 * d.hidden * d_k * min(p_b, p_n))
        if cached:
            notes.append("targets from the cache (same objective as an edit run)")
        if method == "alphaedit":
            solve += len(layers) * 9 * d_k ** 3  # one eigendecomposition per layer (cached)
        flops = t + keys
        peak = weights + 3 * covariance_bytes(d_k, "float64") + d_k * min(batch, n) * 4 + \
            max(rt.target_batch(hp) * target_request_bytes(d, w, lowest_delta) if todo else 0,
                rt.key_rows * key_row_bytes(d, w) +
                min(rt.key_cache_mb << 20, min(batch, n) * (w.rows_per_request - 1) * w.seq_len * d.hidden * d.bytes))
        solve_s = solve / (g["fp64"] * EFFICIENCY)
        notes.append(f"{rt.target_batch(hp)} requests per pass, {len(layers)} layers from {lowest}")
        return StageCost(r["stage"], weights, peak, (_flops_seconds(flops, g, prec) + solve_s) / 3600, notes=notes,
                         eval_hours=eval_h)
    return StageCost(r["stage"], weights, peak, _flops_seconds(flops, g, prec) / 3600, notes=notes, eval_hours=eval_h)


def key_read_params(d: Dims, layers: Sequence[int]) -> int:
    """Weights the key reads of one edit touch per prompt token (`engine.KeyRows`): each run of consecutive
    layers (a region) is one pass up to its first layer's input, then for each layer the layers from there."""
    runs: list[list[int]] = []
    for layer in sorted(set(layers)):
        if runs and layer == runs[-1][-1] + 1:
            runs[-1].append(layer)
        else:
            runs.append([layer])
    return sum(d.params_through(r[0] - 1) + sum(d.layer_params * (l - r[0] + 1) for l in r) for r in runs)


def host_overhead(d: Dims) -> float:
    """Resident memory beyond the model's peak when it runs on the CPU (pages of the weights file the loader
    touched, allocator slack): a quarter of the weights, measured on SmolLM2 (`benchmarks/preflight_check.py`:
    the unedited stage, which holds nothing but the weights, peaks at 1.25× their size). Zero on a GPU."""
    return 0.25 * d.n_params * d.bytes


def advice(c: StageCost, gpu_mem_gb: float, d: Dims) -> str:
    if c.weights > gpu_mem_gb * GB * 0.9:
        return (f"weights alone are {c.weights / GB:.1f} GB: use model.device_map: auto over several GPUs, "
                "or a GPU with more memory")
    return (f"set run.memory_budget_gb: {gpu_mem_gb * 0.9:g} (smaller chunks), or edit.batch_size lower "
            "(the float64 solve buffers are 3·d_k² whatever the chunking)")


def format_table(costs: list[StageCost], gpu: str, gpu_mem_gb: float | None, d: Dims,
                 paper_hours: dict[str, float] | None = None) -> str:
    lines = [f"{'stage':34s} {'weights GB':>10s} {'peak GB':>8s} {'disk GB':>8s} {'tokens':>11s} {'work h':>7s} "
             f"{'eval h':>7s}  notes"]
    total = 0.0
    misfits = []
    for c in costs:
        total += c.total
        fits = "" if gpu_mem_gb is None or c.peak <= gpu_mem_gb * GB else "  DOES NOT FIT"
        if fits:
            misfits.append(c)
        lines.append(f"{c.stage:34s} {c.weights / GB:10.2f} {c.peak / GB:8.2f} {c.disk / GB:8.2f} "
                     f"{c.tokens:11,d} {c.hours:7.2f} {c.eval_hours:7.2f}  {'; '.join(c.notes)}{fits}")
    lines.append(f"total: {total:.1f} GPU-hours on one {gpu.upper()} at {EFFICIENCY:.0%} of peak "
                 "(editing hours are upper bounds: every request runs every step)")
    if paper_hours:
        lines.append("paper (App. D, 10,000 edits, A100): " + ", ".join(f"{k} {v} h" for k, v in paper_hours.items()))
    for c in misfits:
        lines.append(f"{c.stage}: needs {c.peak / GB:.1f} GB > {gpu_mem_gb:g} GB: {advice(c, gpu_mem_gb, d)}")
    return "\n".join(lines)


# The paper's reported wall times for 10,000 edits on one A100 (App. D), per model and method.
PAPER_HOURS = {"gptj": {"jeep": 3.3, "memit": 9.0, "rome": 12.3}, "llama7b": {"jeep": 3.6, "memit": 3.6, "rome": 37.0}}
