"""report.md: the variant table (mean ± 95% CI, tuned value, verdict), the per-job table while it
is short (at most MAX_JOB_ROWS rows; results.csv beyond that), and the plots."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..bench.modes import BENCH_MODES
from ..track import catalogue
from .format import fmt_bytes, fmt_num, fmt_pm, markdown_table, md_cell, num, peak_mem_cell
from .runs import Run, largest_ok
from .heldout import confirm_note, describe
from .lengths import mode_of
from .variants import Comparison, edge_note, incomplete_text, show

TITLES = {"latency": "Latency vs sequence length", "memory": "Peak memory vs sequence length",
          "training": "Training curves", "extrapolation": "Validation loss vs evaluation length",
          "pareto": "Quality vs throughput", "by_position": "Validation loss by position"}
MAX_JOB_ROWS = 30  # beyond this the per-job table is results.csv's job
FIGURE_NAMES = {**{f.column: f.title for f in catalogue.FIGURES if not f.per_length},
                **{f"{m}_median_ms": f"{m.replace('_', ' ')} ms" + ("/token" if m == "decode" else "")
                   for m in BENCH_MODES}}  # the table's short names of the per-mode latencies


def _bench_column(runs: list[Run], mode: str, key: str, name: str, fmt: Callable) -> Optional[tuple]:
    """(header, cells) for one bench figure at each run's largest T; T goes in the header when shared."""
    mem = key == "peak_mem_bytes"  # the point of the latency; its peak may be below resolution ("<64 KiB")
    pts = [largest_ok(r.res.get("bench"), mode) if mem else largest_ok(r.res.get("bench"), mode, key) for r in runs]
    pts = [p if p is None or not mem or p.get(key) is not None or p.get("peak_mem_below_bytes") else None
           for p in pts]
    lens = {p.get("seq_len") for p in pts if p}
    if not lens:
        return None
    shared = len(lens) == 1
    header = f"{name} (T={lens.pop()})" if shared else name
    cells = ["-" if p is None else (peak_mem_cell(p, fmt) if mem else fmt(p[key]))
             + ("" if shared else f" (T={p.get('seq_len')})") for p in pts]
    return header, cells


def _status(run: Run) -> str:
    bad = Counter(r.get("status") for r in run.res.get("bench") or [] if r.get("status") != "ok")
    extra = ", ".join(f"{n} bench {s}" for s, n in sorted(bad.items()))
    return str(run.res.get("status")) + (f" ({extra})" if extra else "")


def table_columns(runs: list[Run]) -> list[tuple[str, list[str]]]:
    """The report table, column by column; columns nobody has are left out."""
    model = [r.res.get("model") or {} for r in runs]
    cols: list[Optional[tuple]] = [("variant", [r.variant for r in runs])]
    if any(r.distinct for r in runs):
        cols.append(("overrides", [r.distinct or "-" for r in runs]))
    cols.append(("params", [fmt_num(m.get("params")) for m in model]))
    cols.append(_bench_column(runs, "forward", "median_ms", "forward ms", fmt_num))
    cols.append(_bench_column(runs, "train_step", "median_ms", "train step ms", fmt_num))
    if any(num(r.train.get("tokens_per_s")) for r in runs):
        cols.append(("train tok/s", [fmt_num(r.train.get("tokens_per_s")) for r in runs]))
    else:
        cols.append(_bench_column(runs, "forward", "tokens_per_s", "forward tok/s", fmt_num))
    mem_mode = "train_step" if any(largest_ok(r.res.get("bench"), "train_step", "peak_mem_bytes") for r in runs) \
        else "forward"
    cols.append(_bench_column(runs, mem_mode, "peak_mem_bytes", f"{mem_mode.replace('_', ' ')} peak mem", fmt_bytes))
    cols.append(("KV bytes/token", [fmt_num(m.get("kv_cache_bytes_per_token")) for m in model]))
    if any(m.get("recurrent_state_bytes") for m in model):  # attn=linear: a constant state instead
        cols.append(("state bytes/seq", [fmt_num(m.get("recurrent_state_bytes")) for m in model]))
    if any(r.train for r in runs):
        cols.append(("val loss", [f"{v:.3f}" if num(v := r.train.get("val_loss")) else "-" for r in runs]))
        names = {r.train.get("metric_name") for r in runs if r.train.get("metric_name")}
        one = names.pop() if len(names) == 1 else None
        cols.append((one or "metric", [("" if one else f"{r.train.get('metric_name')} ") +
                                       fmt_num(r.train.get("metric")) if num(r.train.get("metric")) else "-"
                                       for r in runs]))
    cols.append(("status", [_status(r) for r in runs]))
    if any(r.res.get("error") for r in runs):
        cols.append(("error", [(r.res.get("error") or "")[:160] for r in runs]))
    return [c for c in cols if c is not None]


def job_table(runs: list[Run]) -> str:
    """The per-job table: one row per job."""
    cols = table_columns(runs)
    return markdown_table([h for h, _ in cols], [[c[i] for _, c in cols] for i in range(len(runs))])


def figure_name(fig: str, comp: Comparison) -> str:
    if fig == "metric":
        names = {r.train.get("metric_name") for v in comp.variants for r in v.ok_runs if r.train.get("metric_name")}
        return names.pop() if len(names) == 1 else "metric"
    if fig.startswith("val_loss_T"):
        return f"val loss at T={fig.removeprefix('val_loss_T')}"
    return FIGURE_NAMES.get(fig, fig)


def _with_len(fig: str, comp: Comparison) -> str:
    """A bench figure's name with the one sequence length every variant is compared at (lengths.py)."""
    T = comp.lengths.get(mode_of(fig) or "")
    return figure_name(fig, comp) + (f" (T={T})" if T is not None else "")


def _bench_cells(fig: str, comp: Comparison) -> list[str]:
    """mean ± CI per variant; each with its own T where the variants share no length (no comparison)."""
    mode = mode_of(fig)
    own = mode in comp.lengths and comp.lengths[mode] is None
    cells = []
    for v in comp.variants:
        e, t = v.stats.get(fig), v.stats.get(f"{mode}_seq_len")
        cell = fmt_pm(e.mean, e.ci95) if e else "-"
        cells.append(cell + (f" (T={t.mean:g})" if own and cell != "-" and t and t.mean is not None else ""))
    return cells


def variant_columns(comp: Comparison) -> list[tuple[str, list[str]]]:
    """The variant table: n, the chosen tuned value, mean ± 95% CI of the objective and the key speed
    figures, and the difference and verdict against the baseline."""
    vs = comp.variants
    direction = "lower" if comp.lower_is_better else "higher"
    cols: list[tuple[str, list[str]]] = [("variant", [v.label + (" (baseline)" if v.is_baseline else "")
                                                      for v in vs])]
    cols.append(("n", [f"{v.n}" + (f" (+{v.n_failed} not ok)" if v.n_failed else "") for v in vs]))
    if comp.tune:
        cols.append((f"{comp.tune} (chosen of)", [f"{show(v.tuned_value) if v.tuned_value is not None else '-'} "
                                                  f"({', '.join(show(x) for x in v.tuned_over)})"
                                                  + (f", {v.tuned_edge} tried" if v.tuned_edge else "")
                                                  + (f"; not complete, ranked last: {t}" if (t := incomplete_text(v, show))
                                                     else "") for v in vs]))
    obj = comp.objective
    has = lambda fig: any(fig in v.stats and v.stats[fig].mean is not None for v in vs)  # noqa: E731
    if has(obj):
        cols.append((f"{_with_len(obj, comp)} ({direction} is better)",
                     _bench_cells(obj, comp) if mode_of(obj) else [fmt_pm(v.stats[obj].mean, v.stats[obj].ci95)
                                                                    for v in vs]))
        if comp.baseline is not None:
            cols.append((f"Δ vs baseline ({v_method(comp)})",
                         ["-" if v.is_baseline or obj not in v.diffs else fmt_pm(v.diffs[obj].diff, v.diffs[obj].ci95)
                          for v in vs]))
            uncompared = comp.lengths.get(mode_of(obj) or "", 0) is None
            cols.append(("verdict", [v.verdict or ("- (no common T)" if uncompared else "- (n < 2)") for v in vs]))
    if comp.tune:
        cols.append(("reported on", [describe(v.selection) for v in vs]))
    for fig in ("val_loss", "metric", "train_tokens_per_s", "forward_median_ms", "train_step_median_ms"):
        if fig != obj and has(fig):
            if mode_of(fig):
                cols.append((_with_len(fig, comp), _bench_cells(fig, comp)))
                continue
            cells = [fmt_pm(v.stats[fig].mean, v.stats[fig].ci95) if fig in v.stats else "-" for v in vs]
            cols.append((figure_name(fig, comp), cells))
    if has("params"):
        cols.append(("params", [fmt_num(v.stats["params"].mean) for v in vs]))
    if has("kv_cache_bytes_per_token"):
        cols.append(("KV bytes/token", [fmt_num(v.stats["kv_cache_bytes_per_token"].mean) for v in vs]))
    if has("recurrent_state_bytes") and any(v.stats["recurrent_state_bytes"].mean for v in vs
                                            if "recurrent_state_bytes" in v.stats):
        cols.append(("state bytes/seq", [fmt_num(v.stats["recurrent_state_bytes"].mean)
                                         if "recurrent_state_bytes" in v.stats else "-" for v in vs]))
    return cols


def v_method(comp: Comparison) -> str:
    methods = {v.diff_method for v in comp.variants if v.diff_method}
    return "/".join(sorted(methods)) or "paired"


def variant_table(comp: Comparison) -> str:
    cols = variant_columns(comp)
    return markdown_table([h for h, _ in cols], [[c[i] for _, c in cols] for i in range(len(comp.variants))])


def _explain(comp: Comparison) -> str:
    reps = ", ".join(comp.replicates)
    out = (f"One row per variant: the jobs' resolved config minus the replicate keys ({reps})"
           + (f" and the tuned key `{comp.tune}`" if comp.tune else "") + ". "
           "Cells are mean ± half-width of the 95% confidence interval of the mean (Student t, n-1 degrees "
           "of freedom; just the mean when n = 1) over the variant's ok jobs")
    if comp.tune:
        out += (f" at the chosen `{comp.tune}`: the value tried whose tuning jobs (the replicates present at every "
                f"value tried) have the best mean {figure_name(comp.objective, comp)}, among the values at which every "
                "tuning job ended ok (a value where a tuning seed diverged or failed is *not complete*: its mean "
                "would be over the survivors, so it ranks below every complete value and is never chosen; "
                "the cell names those values and the jobs that were not ok). *Reported on*: "
                "`held-out runs` are the jobs at the chosen value whose replicates no other value has (confirmation "
                "runs the choice never saw), and the row's figures come from them alone; `same runs (optimistic)` "
                "means the figures come from the jobs the value was chosen on, so the mean is biased in the "
                "variant's favour and the CI does not cover that; `one value` means nothing was chosen")
    out += ". Jobs that are not ok are left out and counted after n."
    if comp.baseline is not None:
        out += (f" Δ is variant − baseline (`{comp.baseline.label}`), paired by replicate when both have the same "
                "replicate values, Welch otherwise; the verdict is `within noise` when its 95% CI contains 0.")
    if comp.lengths:
        out += (" Bench figures are compared at one sequence length per mode, the largest that every variant's "
                "reported jobs completed (T in the column header; `<mode>_seq_len` in `variants.csv`), not at each "
                "job's own largest.")
    out += " Every figure's n, mean, std and ci95 are in `variants.csv`."
    out += "".join(f"\n\n**Not compared.** {n[0].upper()}{n[1:]}." for n in comp.notes)
    out += f"\n\n**Grid edge.** {note}" if (note := edge_note(comp)) else ""
    return out + (f"\n\n**Selected and reported on the same runs.** {note}" if (note := confirm_note(comp)) else "")


def _env_line(runs: list[Run]) -> str:
    envs = Counter(f"{e.get('device')} ({e.get('device_name')}), torch {e.get('torch')}, threads={e.get('threads')}, "
                   f"{e.get('dtype')}" for r in runs if (e := r.res.get("env")))
    return "; ".join(f"{k} ({n} runs)" if len(envs) > 1 else k for k, n in envs.items()) or "-"


def write_markdown(path: Path, runs: list[Run], sources: Sequence[Path], images: dict[str, Path],
                   comp: Optional[Comparison] = None, legend_note: str = "", confirm: Sequence[str] = (),
                   launch_notes: Sequence[str] = ()) -> Path:
    status = Counter(str(r.res.get("status")) for r in runs)
    out = ["# attnbench report", "",
           f"{len(runs)} runs from {', '.join(f'`{s}`' for s in sources)} "
           f"({', '.join(f'{n} {s}' for s, n in status.items())}).", "",
           *[f"{n[0].upper()}{n[1:]}." for n in launch_notes], *([""] if launch_notes else []),
           f"Measured on: {_env_line(runs)}.", ""]
    if comp is not None:
        out += [f"## Variants ({len(comp.variants)})", "", variant_table(comp), "", _explain(comp), ""]
    if confirm:
        out += ["## Confirmation runs", "",
                "Each variant reported on its tuning runs, at its chosen value with fresh replicates, then the "
                "report over the tuning sweep and the confirmation folder together:", "",
                "```bash", *confirm, "```", ""]
    out += ["## Jobs", ""]
    if len(runs) <= MAX_JOB_ROWS:
        out += [job_table(runs), "",
                "Latency is the median over `bench.repeats` at each run's largest benchmarked sequence length T "
                "(batch `bench.batch_size`); peak memory is that measurement's own peak; train tok/s is steady-state "
                "training throughput (evaluation and the warm-up steps left out); val loss is in nats/token at "
                "`train.seq_len`. "
                "All figures are in `results.csv`; every bench point in `bench.csv`.", ""]
    else:
        bad = [r for r in runs if not r.ok]
        out += [f"{len(runs)} jobs: too many for a table here; one row per job (every figure, its variant and "
                "whether it is at the chosen tuned value) is in `results.csv`, every bench point in `bench.csv`.", ""]
        if bad:
            out += [f"Jobs that are not ok ({len(bad)}):", ""]
            out += [f"- `{r.dir}`: {r.status}: {md_cell((r.res.get('error') or '')[:160])}" for r in bad[:50]]
            out += [f"- ... and {len(bad) - 50} more (see `results.csv`)"] if len(bad) > 50 else []
            out.append("")
    if legend_note:
        out += [legend_note, ""]
    for key, img in images.items():
        out += [f"## {TITLES[key]}", "", f"![{TITLES[key]}]({img.name})", ""]
    path.write_text("\n".join(out))
    return path
