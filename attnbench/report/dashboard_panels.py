"""The dashboard's panels (see dashboard.py): every candidate panel, section by section, with the keys it
names, and the check that keeps only panels whose keys the runs logged.

A key is written "h:<history key>", "s:<summary key>" or "c:<config key>": line plots read history,
bars, scatter plots and tables read the summary, parallel coordinates and grouping read the config.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ..bench.modes import BENCH_MODES
from ..track import catalogue
from .markdown import figure_name
from .runs import differing
from .variants import Comparison

BAND = dict(aggregate=True, groupby_aggfunc="mean", groupby_rangefunc="stderr")
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf"]  # matplotlib's tab10, as in the report's PNGs
# results.csv figure -> W&B summary key, from the catalogue (track/catalogue.py)
TRAIN_KEYS = {f.column: f.wandb_key for f in (*catalogue.TRAIN, *catalogue.PROBES)}
MODEL_KEYS = tuple(f.column for f in catalogue.MODEL)
MAX_AXES = 8  # parallel-coordinates columns beyond the objective
SECTIONS = ("training", "quality", "cost", "trade-off", "axes", "runs")


@dataclass
class Logged:
    """The keys some W&B runs logged: history, summary, config."""

    history: set = field(default_factory=set)
    summary: set = field(default_factory=set)
    config: set = field(default_factory=set)

    def add(self, run: Any) -> None:
        """`run`: a wandb_reader.WandbRun or a wandb_keys.RunKeys (the keys alone, as the dashboard reads them)."""
        self.history.update(run.history_keys)
        self.summary.update(run.summary)
        self.config.update(run.config)

    def has(self, key: str) -> bool:
        """`key` is "h:<history key>", "s:<summary key>" or "c:<config key>"."""
        kind, name = key.split(":", 1)
        return name in {"h": self.history, "s": self.summary, "c": self.config}[kind]


@dataclass
class Cand:
    """A panel that may be drawn: the keys it names and how to build it from those present."""

    section: str
    title: str
    keys: list
    make: Callable[[list], Any]
    need: int = 1  # fewer keys present than this: left out
    in_report: bool = False


# ----------------------------------------------------------------------------- keys
def bench_lens(runs: list, mode: str) -> list[int]:
    return sorted({int(b["seq_len"]) for r in runs for b in r.res.get("bench") or []
                   if b.get("mode") == mode and b.get("status") == "ok" and b.get("seq_len") is not None})


def summary_key(fig: str, runs: list) -> Optional[str]:
    """The W&B summary key of a results.csv figure (bench figures at the largest length benchmarked)."""
    if fig in TRAIN_KEYS:
        return TRAIN_KEYS[fig]
    if fig in MODEL_KEYS:
        return f"model/{fig}"
    if fig.startswith("val_loss_T"):
        return f"train/val_loss_by_len/{fig.removeprefix('val_loss_T')}"
    for mode in BENCH_MODES:
        if fig.startswith(mode + "_") and (lens := bench_lens(runs, mode)):
            return f"bench/{mode}/T{lens[-1]}/{fig.removeprefix(mode + '_')}"
    return None


def swept_keys(comp: Comparison) -> list[str]:
    return list(dict.fromkeys([*comp.varying, *([comp.tune] if comp.tune else [])]))


def split_keys(comp: Comparison) -> list[str]:
    """The config keys that tell apart variants sharing a `variant` name (a kernel sweep: attn.impl)."""
    by: dict[str, list] = {}
    for v in comp.variants:
        by.setdefault(v.name, []).append(v.config)
    return list(dict.fromkeys(k for cfgs in by.values() if len(cfgs) > 1 for k in differing(cfgs)))


def colors(names: list[str]) -> dict[str, str]:
    """A colour per variant name (the first grouping level), in the order of the report's table."""
    return {n: COLORS[i % len(COLORS)] for i, n in enumerate(names)}


def names(keys: list) -> list[str]:
    """The logged names of "h:", "s:" or "c:" keys."""
    return [k.split(":", 1)[1] for k in keys]


def backend_config(key: str) -> str:
    """A flat config key as W&B stores it: `variant` -> variant.value, `train.lr` -> train.lr.value."""
    return f"{key}.value"


# ----------------------------------------------------------------------------- panels
def candidates(comp: Comparison, jobs: list) -> list[Cand]:
    """Every panel of the dashboard, section by section, before the key check."""
    import wandb_workspaces.reports.v2 as wr

    line = lambda title: (lambda ks: wr.LinePlot(title=title, x="Step", y=names(ks), **BAND))  # noqa: E731
    bar = lambda title: (lambda ks: wr.BarPlot(title=title, metrics=names(ks), orientation="v", **BAND))  # noqa: E731
    metrics = sorted({str(r.train.get("metric_name")) for r in jobs if r.train.get("metric_name")})
    out = [Cand("training", "train loss vs step", ["h:train_loss"], line("train loss vs step"), in_report=True),
           Cand("training", "val loss vs step", ["h:val_loss"], line("val loss vs step"), in_report=True)]
    out += [Cand("training", f"val {m} vs step", [f"h:val_{m}"], line(f"val {m} vs step")) for m in metrics]
    out.append(Cand("quality", "final val loss (nats/token)", ["s:train/val_loss"], bar("final val loss (nats/token)"),
                    in_report=True))
    title = f"final {figure_name('metric', comp)}"
    out.append(Cand("quality", title, ["s:train/metric"], bar(title), in_report=True))
    lens = sorted({str(t) for r in jobs for t, x in (r.train.get("val_loss_by_len") or {}).items() if x is not None},
                  key=lambda t: (len(t), t))  # lengths past a learned table's context are null: never logged
    if lens:
        out.append(Cand("quality", "val loss by evaluation length", [f"s:train/val_loss_by_len/{t}" for t in lens],
                        bar("val loss by evaluation length")))
    for mode in BENCH_MODES:
        if ls := bench_lens(jobs, mode):
            for key, what in (("median_ms", "latency (median ms)"), ("peak_mem_bytes", "peak memory (bytes)")):
                t = f"{mode} {what} by sequence length"
                out.append(Cand("cost", t, [f"s:bench/{mode}/T{n}/{key}" for n in ls], bar(t)))
    for key, t in (("model/kv_cache_bytes_per_token", "KV cache bytes per token"), ("model/params", "parameters"),
                   ("train/tokens_per_s", "train tokens/s")):
        out.append(Cand("cost", t, [f"s:{key}"], bar(t)))
    out.append(Cand("cost", "bench rows", ["s:bench/table"],
                    lambda ks: wr.WeavePanelSummaryTable(table_name=names(ks)[0])))
    out += tradeoff_and_axes(comp, jobs)
    out.append(Cand("runs", "run comparer", [], lambda ks: wr.RunComparer(diff_only="split"), need=0))
    return out


def tradeoff_and_axes(comp: Comparison, jobs: list) -> list[Cand]:
    import wandb_workspaces.reports.v2 as wr

    obj = summary_key(comp.objective, jobs)
    speed = "train/tokens_per_s" if any(r.train.get("tokens_per_s") for r in jobs) else summary_key(
        "forward_tokens_per_s", jobs)
    out = []
    if obj and speed:
        what = "train tok/s" if speed.startswith("train/") else f"forward tok/s ({speed.split('/')[2]})"
        t = f"{figure_name(comp.objective, comp)} vs {what}"
        out.append(Cand("trade-off", t, [f"s:{speed}", f"s:{obj}"], need=2, in_report=True,
                        make=lambda ks: wr.ScatterPlot(title=t, x=wr.SummaryMetric(ks[0][2:]),
                                                       y=wr.SummaryMetric(ks[1][2:]))))
    axes = [f"c:{k}" for k in swept_keys(comp)[:MAX_AXES]] + ([f"s:{obj}"] if obj else [])
    if axes:
        def pc(ks: list) -> Any:
            cols = [wr.ParallelCoordinatesPlotColumn(metric=wr.Config(k[2:]) if k.startswith("c:") else
                                                     wr.SummaryMetric(k[2:])) for k in ks]
            return wr.ParallelCoordinatesPlot(title="swept keys and the objective", columns=cols)
        out.append(Cand("axes", "swept keys and the objective", axes, pc, need=2, in_report=True))
    return out


def check(cands: list[Cand], have: Logged, where: str) -> tuple[dict, list[str]]:
    """Section -> panels, built from the keys present; and a note for each panel or key left out."""
    sections: dict[str, list] = {}
    notes = []
    for c in cands:
        present = [k for k in c.keys if have.has(k)]
        missing = [k.split(":", 1)[1] for k in c.keys if not have.has(k)]
        if len(present) < c.need or (c.keys and not present):
            notes.append(f"{where}: left out panel '{c.title}' ({c.section}): no run logs {', '.join(missing)}")
            continue
        if missing:
            notes.append(f"{where}: panel '{c.title}' without {', '.join(missing)}: no run logs it")
        sections.setdefault(c.section, []).append(c.make(present))
    return sections, notes
