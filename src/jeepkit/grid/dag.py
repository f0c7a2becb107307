"""The stages a grid runs and what each waits for, read from DVC's own graph (`dvc dag`), never from a
list of our own: the DAG of a profile depends on its params (foreach/matrix), so it is read in a checkout
that has the profile's overrides applied."""

from __future__ import annotations

from contextlib import chdir
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError


@dataclass(frozen=True)
class Node:
    name: str  # DVC's address, e.g. "edit@memit-counterfact-0"
    upstream: tuple[str, ...]  # the stages whose outputs it reads
    # "job": a job of its own, carried back by the run-cache; "finish": run by the final job, because DVC's
    # run-cache does not cover it (a `cache: false` output that is neither a metric nor a plot: the reports)
    # or it reads the output of such a stage
    runs_in: str = "job"


def run_cacheable(stage) -> bool:
    """DVC's own rule (dvc.stage.Stage.run): no run-cache entry is saved for a stage with an uncached output
    that is neither a metric nor a plot, or one that always changes."""
    if stage.always_changed or not stage.deps or not stage.outs:
        return False
    return not any(not o.use_cache for o in stage.outs if not (o.is_metric or o.is_plot))


def stage_graph(root: str | Path, targets: list[str] | None = None) -> list[Node]:
    """Every stage `dvc repro <targets>` would consider, dependencies first (a topological order)."""
    import networkx as nx
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    with chdir(root), Repo(".") as repo:  # stage addresses are relative to the working directory
        graph = repo.index.graph  # edge: stage -> a stage whose output it depends on
        try:
            picked = [s for t in targets or [] for s in repo.stage.collect(t)]
        except DvcException as e:
            raise ConfigError(f"unknown stage in targets {targets}: {e}") from None
        by_name = {s.addressing: s for s in graph.nodes}
        nodes = set(graph.nodes)
        if picked:
            nodes = set()
            for s in (by_name[p.addressing] for p in picked):
                nodes |= {s, *nx.descendants(graph, s)}
        sub = graph.subgraph(nodes)
        order = list(reversed(list(nx.topological_sort(sub))))
        local: set = set()
        for s in order:  # dependencies first, so an upstream stage's verdict is known
            if not run_cacheable(s) or any(d in local for d in sub.successors(s)):
                local.add(s)
        return [Node(s.addressing, tuple(sorted(d.addressing for d in sub.successors(s))),
                     "finish" if s in local else "job") for s in order]


def slug(name: str) -> str:
    """A file-system-safe name for a stage address (edit@memit-counterfact-0 -> edit_memit-counterfact-0)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
