"""Rendering the ledger: Markdown and JSON (`write_ledger`) and the report index page (`write_index`)."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import quote


from ..errors import InputError
from ..io import read_json, write_json, write_text
from .rules import RULES, counts


_ARTIFACT_ORDER = ("Table 1", "Table 2", "Table 3", "Table 4", "Fig. 2", "Fig. 4", "Fig. 6", "App. D")


def _md_cell(x: Any) -> str:
    s = "" if x is None else str(x)
    return s.replace("|", "\\|").replace("\n", " ")


def ledger_markdown(entries: Sequence[Mapping[str, Any]]) -> str:
    c = counts(entries)
    lines = ["# Claims ledger", "",
             f"{len(entries)} claims: " + ", ".join(f"{n} {v}" for v, n in c.items()) + ".", "", "Rules:", ""]
    lines += [f"* {r}" for r in RULES]
    arts = [a for a in _ARTIFACT_ORDER if any(e["artifact"] == a for e in entries)]
    arts += sorted({e["artifact"] for e in entries} - set(arts))
    for art in arts:
        sub = [e for e in entries if e["artifact"] == art]
        sc = counts(sub)
        lines += ["", f"## {art}", "", ", ".join(f"{n} {v}" for v, n in sc.items() if n) + ".", "",
                  "| id | claim | paper | ours | protocol | verdict | reason |", "|---|---|---|---|---|---|---|"]
        for e in sub:
            paper = e["paper_value"]
            if isinstance(paper, float):
                paper = f"{paper:.1f}" + (f" ± {e['paper_interval']:.1f}" if e.get("paper_interval") else "")
            lines.append("| " + " | ".join(_md_cell(x) for x in (e["id"], e["claim"], paper, e["reproduced"],
                                                                  e.get("protocol", ""), f"**{e['verdict']}**",
                                                                  e["reason"])) + " |")
        scales = list(dict.fromkeys(e["scale"] for e in sub if e.get("scale")))
        if scales:
            lines += ["", "Our scale: " + " | ".join(scales)]
    return "\n".join(lines) + "\n"


def write_ledger(entries: Sequence[Mapping[str, Any]], reports_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``reports_dir/ledger.md`` and ``ledger.json`` atomically; returns their paths."""
    d = Path(reports_dir)
    md, js = d / "ledger.md", d / "ledger.json"
    write_text(md, ledger_markdown(entries))
    write_json(js, {"rules": list(RULES), "counts": counts(entries), "entries": list(entries)})
    return md, js


def _link(rel: str, label: str | None = None) -> str:
    return f'<a href="{html.escape(quote(rel))}">{html.escape(label or rel)}</a>'


def _html_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def headline(metrics_root: str | os.PathLike, ledger_json: str | os.PathLike | None = None,
             params_file: str | os.PathLike | None = None) -> str:
    """The top of the report: the scale of the run in one line, the verdict counts, and per dataset our
    Score / ES / GS / LS (with 95% intervals) beside the paper's LLaMA row of the same method. HTML."""
    import hashlib

    from .. import reporting as rp

    main = rp.load_group(metrics_root, "main")
    parts = []
    if main.empty:
        return "<p><b>No runs yet</b>: metrics/main is empty.</p>"
    commits, seeds = set(), sorted({int(s) for s in main["seed"]})
    for f in main["file"]:
        code = read_json(f).get("code") or {}
        commits.add(str(code.get("git_commit") or "unknown")[:12] + (" (dirty)" if code.get("git_dirty") else ""))
    params_hash = "n/a"
    if params_file is not None and Path(params_file).exists():
        params_hash = hashlib.sha256(Path(params_file).read_bytes()).hexdigest()[:12]
    models = ", ".join(sorted(set(f"{k} ({i})" if i else k for k, i in zip(main["model"], main["model_id"]))))
    scale = (f"Model {models}; data {', '.join(sorted(set(main['data_source'])))}; "
             f"{', '.join(str(n) for n in sorted(set(main['n_edits'])))} edits per cell; seed(s) "
             f"{', '.join(map(str, seeds))}; code {', '.join(sorted(commits))}; params.yaml sha256 {params_hash}. "
             f"The paper: {rp.PAPER_SCALE}.")
    parts.append(f"<p class=\"scale\"><b>Scale of this run.</b> {html.escape(scale)}</p>")
    if ledger_json is not None and Path(ledger_json).exists():
        c = read_json(ledger_json).get("counts", {})
        parts.append("<p><b>Claims ledger:</b> " + html.escape(", ".join(f"{int(n)} {v}" for v, n in c.items()))
                     + " (" + _link("ledger.md", "read every claim") + ")</p>")
    for ds in [d for d in ("zsre", "mcf", "counterfact") if d in set(main["dataset"])]:
        table = rp.comparison_table(main, ds)
        ours = table[table["Source"] == rp.OURS]
        paper = table[table["Source"] == "paper, LLaMA"].set_index("Method")
        rows = []
        for _, r in ours.iterrows():
            p = paper.loc[r["Method"]] if r["Method"] in paper.index else None
            rows.append([r["Method"], *(r[m] for m in rp.METRIC_COLUMNS),
                         *((p[m] for m in rp.METRIC_COLUMNS) if p is not None else ("—",) * len(rp.METRIC_COLUMNS))])
        header = ["Method", *(f"ours {m}" for m in rp.METRIC_COLUMNS), *(f"paper {m}" for m in rp.METRIC_COLUMNS)]
        parts.append(f"<h3>{html.escape(rp.DATASET_LABELS.get(ds, ds))}: ours beside the paper's LLaMA-7B row</h3>")
        parts.append(_html_table(header, rows))
    return "\n".join(parts)


def write_index(reports_dir: str | os.PathLike, *, expect: Iterable[str] = (),
                title: str = "JEEP replication: reports", lead: str = "") -> Path:
    """``reports_dir/index.html``: plain HTML with relative links to every table (md/csv), figure (png/pdf, with
    a PNG preview), executed notebook (notebooks/*.ipynb) and the ledger found under `reports_dir`.
    `expect` lists relative paths to link even if they do not exist yet (e.g. the notebook being run);
    `lead` is HTML put first, under the title (`headline`: what a reader came for)."""
    d = Path(reports_dir)
    expect = [e for e in expect]

    def found(sub: str, exts: Sequence[str]) -> list[str]:
        base = d / sub
        have = {f"{sub}/{p.name}" for p in base.glob("*") if p.is_file() and p.suffix.lstrip(".") in exts} \
            if base.is_dir() else set()
        have |= {e for e in expect if e.startswith(f"{sub}/") and e.rsplit(".", 1)[-1] in exts}
        return sorted(have)

    parts = [f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{html.escape(title)}</title>\n"
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "img{max-width:100%;border:1px solid #ccc;margin:.3em 0}li{margin:.2em 0}"
             "table{border-collapse:collapse;font-size:.85em;margin:.5em 0}td,th{border:1px solid #ccc;"
             "padding:.2em .5em;text-align:right}td:first-child,th:first-child{text-align:left}</style>\n"
             "</head>\n<body>\n"
             f"<h1>{html.escape(title)}</h1>"]
    if lead:
        parts.append(lead)
    # ledger
    ledger = [f for f in ("ledger.md", "ledger.json") if (d / f).exists() or f in expect]
    parts.append("<h2>Claims ledger</h2>")
    if ledger:
        summary = ""
        if (d / "ledger.json").exists():
            try:
                c = read_json(d / "ledger.json").get("counts", {})
                summary = " — " + ", ".join(f"{int(n)} {html.escape(str(v))}" for v, n in c.items())
            except (InputError, AttributeError, TypeError, ValueError):
                summary = ""
        parts.append("<p>" + " · ".join(_link(f) for f in ledger) + summary + "</p>")
    else:
        parts.append("<p>not written yet</p>")
    # tables: group md/csv by stem
    tables = found("tables", ("md", "csv"))
    parts.append("<h2>Tables</h2>")
    stems = sorted({t.rsplit(".", 1)[0] for t in tables})
    parts.append("<ul>" + "".join(
        f"<li>{html.escape(Path(s).name)}: " + " · ".join(_link(t, t.rsplit('.', 1)[1]) for t in tables
                                                        if t.rsplit('.', 1)[0] == s) + "</li>"
        for s in stems) + "</ul>" if stems else "<p>none</p>")
    figs = found("figures", ("png", "pdf"))
    parts.append("<h2>Figures</h2>")
    fstems = sorted({f.rsplit(".", 1)[0] for f in figs})
    if not fstems:
        parts.append("<p>none</p>")
    for s in fstems:
        own = [f for f in figs if f.rsplit(".", 1)[0] == s]
        parts.append(f"<h3>{html.escape(Path(s).name)}</h3><p>" + " · ".join(_link(f, f.rsplit('.', 1)[1]) for f in own)
                     + "</p>")
        png = next((f for f in own if f.endswith(".png")), None)
        if png:
            parts.append(f'<a href="{html.escape(quote(png))}"><img src="{html.escape(quote(png))}" '
                         f'alt="{html.escape(Path(s).name)}"></a>')
    nbs = found("notebooks", ("ipynb",))
    parts.append("<h2>Executed notebooks</h2>")
    parts.append("<ul>" + "".join(f"<li>{_link(n)}</li>" for n in nbs) + "</ul>" if nbs else "<p>none</p>")
    parts.append("</body>\n</html>\n")
    out = d / "index.html"
    write_text(out, "\n".join(parts))
    return out
