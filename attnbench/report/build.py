"""Build the report: collect the runs, group them into variants, write the CSVs, the plots and report.md."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from . import plots
from .mad import write_mad
from .plots_pos import val_loss_by_pos
from .zoology import write_zoology
from .markdown import figure_name, write_markdown
from .runs import job_set, name_runs, shorten
from .tables import bench_rows, csv_row, write_csv
from .heldout import HELD_OUT, confirm_commands
from .variants import DEFAULT_REPLICATES, Comparison, group, reported_runs, run_variant, show, variant_rows

log = logging.getLogger(__name__)

PLOTS = {"latency": "latency_vs_seq_len.png", "memory": "memory_vs_seq_len.png", "training": "training_curves.png",
         "extrapolation": "val_loss_vs_len.png", "pareto": "quality_vs_throughput.png",
         "by_position": "val_loss_by_pos.png"}
LEGEND_LIMIT = 12  # beyond this many variants, only the best ones get a colour and a legend entry


@dataclass
class Report:
    runs: list
    files: dict  # name -> Path
    images: dict  # plot key -> Path
    comparison: Optional[Comparison] = None
    legends: dict = field(default_factory=dict)  # PNG name -> number of legend entries
    legend_note: str = ""
    confirm: list = field(default_factory=list)  # commands that run the held-out confirmation jobs (--tune)
    launch_notes: list = field(default_factory=list)  # jobs of earlier launches left out, jobs whose launch is unknown


def _ranked(comp: Comparison) -> list:
    """Variants with ok jobs, best objective mean first (those without the objective last, in order)."""
    vs = [v for v in comp.variants if v.n]
    key = comp.objective

    def rank(v):
        e = v.stats.get(key)
        if e is None or e.mean is None:
            return (1, 0.0)
        return (0, e.mean if comp.lower_is_better else -e.mean)

    return sorted(vs, key=rank)


def make_plots(comp: Comparison, out: Path, legend_limit: int = LEGEND_LIMIT,
               legends: Optional[dict] = None) -> tuple[dict[str, Path], str]:
    """The PNG plots, one series per variant; returns them and a note on the legend when it is cut."""
    shown = [v for v in comp.variants if v.n]
    ranked = _ranked(comp)
    best = {id(v) for v in ranked[:legend_limit]}
    note = ""
    if len(shown) > legend_limit:
        note = (f"The plots give a colour and a legend entry to the best {legend_limit} of {len(shown)} variants "
                f"by mean {figure_name(comp.objective, comp)}; the others are drawn thin and grey.")
    shorts, common = shorten([v.name for v in shown], [v.label for v in shown])
    series = [plots.Series(label=s, benches=[r.res.get("bench") or [] for r in v.ok_runs],
                           curves=[r.dir for r in v.ok_runs], trains=[r.train for r in v.ok_runs],
                           train_len=((v.ok_runs[0].config.get("train") or {}).get("seq_len")),
                           in_legend=id(v) in best) for v, s in zip(shown, shorts)]
    plots.assign_colors(series)
    runs = [r for v in shown for r in v.ok_runs]
    envs = {f"{e.get('device')} {e.get('device_name')}, {e.get('dtype')}" for r in runs if (e := r.res.get("env"))}
    where = f" on {envs.pop()}" if len(envs) == 1 else ""
    n_max = max((v.n for v in shown), default=0)
    what = f"; mean of up to {n_max} replicates, 95% CI" if n_max > 1 else ""
    cut = f"; legend: best {legend_limit} of {len(shown)}" if note else ""
    suffix = f"\n{common}{what}{cut}" if common or what or cut else ""
    made = {
        "latency": plots.bench_vs_seq_len(series, out / PLOTS["latency"], "median_ms",
                                          f"latency vs sequence length{where}{suffix}", legends=legends),
        "memory": plots.bench_vs_seq_len(series, out / PLOTS["memory"], "peak_mem_bytes",
                                         f"peak memory vs sequence length{where}{suffix}", legends=legends),
        "training": plots.training_curves(series, out / PLOTS["training"], f"training{suffix}", legends=legends),
        "extrapolation": plots.val_loss_by_len(series, out / PLOTS["extrapolation"],
                                               f"validation loss vs evaluation length{suffix}", legends=legends),
        "by_position": val_loss_by_pos(series, out / PLOTS["by_position"],
                                       f"validation loss by position{suffix}", legends=legends),
        "pareto": plots.quality_vs_throughput(series, out / PLOTS["pareto"],
                                              f"quality vs throughput (outlined: Pareto front of the means)"
                                              f"{where}{suffix}", legends=legends),
    }
    return {k: v for k, v in made.items() if v is not None}, note


def build_report(paths: Sequence[Path], out: Optional[Path] = None, replicates: Sequence[str] = DEFAULT_REPLICATES,
                 tune: Optional[str] = None, objective: Optional[str] = None,
                 baseline: Optional[Sequence[str]] = None, legend_limit: int = LEGEND_LIMIT,
                 all_launches: bool = False) -> Report:
    """Collect the runs under `paths`, group them into variants and write the report files into `out`
    (default <paths[0]>/report). The jobs are those the sweep summary counts (runs.job_set: the latest
    launch of each sweep directory, unless `all_launches`). Bad options raise ConfigError before anything
    is written."""
    paths = [Path(p) for p in paths]
    jobs = job_set(paths, all_launches=all_launches)
    runs, launch_notes = jobs.runs, jobs.notes(flag="`--all-launches`")
    name_runs(runs)
    comp = group(runs, replicates=replicates, tune=tune, objective=objective, baseline=baseline)
    out = Path(out) if out is not None else paths[0] / "report"
    out.mkdir(parents=True, exist_ok=True)
    of, reported = run_variant(comp), reported_runs(comp)
    held = {id(r) for v in comp.variants if v.selection == HELD_OUT for r in v.chosen}
    rows = []
    for r in runs:
        label, chosen = of[id(r)]
        extra = {"at_chosen_" + comp.tune: chosen, "reported": id(r) in reported, "held_out": id(r) in held} \
            if tune else {}
        rows.append({**csv_row(r), "compare_variant": label, **extra})
    files = {"results.csv": write_csv(out / "results.csv", rows),
             "variants.csv": write_csv(out / "variants.csv", variant_rows(comp))}
    if brows := bench_rows(runs):
        files["bench.csv"] = write_csv(out / "bench.csv", brows)
    legends: dict = {}
    images, note = make_plots(comp, out, legend_limit, legends)
    confirm = confirm_commands(comp, paths, show) if tune else []
    files["report.md"] = write_markdown(out / "report.md", runs, paths, images, comp, note, confirm, launch_notes)
    if mad_csv := write_mad(runs, out, files["report.md"]):  # data=mad jobs: the task x variant table
        files["mad.csv"] = mad_csv
    files.update(write_zoology(runs, out, files["report.md"]))  # data=mqar over widths x pairs: two figures
    log.info("report: %d runs, %d variants -> %s", len(runs), len(comp.variants), out)
    return Report(runs=runs, files=files, images=images, comparison=comp, legends=legends, legend_note=note,
                  confirm=confirm, launch_notes=launch_notes)


__all__ = ["LEGEND_LIMIT", "PLOTS", "Report", "build_report", "make_plots"]
