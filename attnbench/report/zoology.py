"""The MQAR figures of a report (data=mqar jobs over model.d_model x data.n_pairs): Zoology's and Based's axes.

- mqar_recall_vs_pairs.png: recall against pairs, one panel per width, one line per attention variant;
- mqar_recall_vs_state.png: recall against recurrent state bytes (Based's x axis), one panel per pair
  count, one line per variant through its widths. A variant's state is what it keeps per sequence to
  decode the next token: softmax attention its KV cache at train.seq_len (kv_cache_bytes_per_token x T),
  a fixed-state mixer its `recurrent_state_bytes` (results.json `model`).

A cell (variant, width, pairs) is shown at its best train.lr: the lr is chosen on the seeds present at
every lr of the cell (mean recall), and the point is the mean ± 95% CI over the seeds at that lr that
the choice never saw when there are any (held-out), else over the same seeds (then the figure says so).
The variant of a job is named as in the MAD table (report/mad.py: its attn overrides).
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Optional, Sequence

from .mad import attention_label
from .plots import _mean_band, _new_figure, _plain_numbers, _save
from .runs import Run

FILES = ("mqar_recall_vs_pairs.png", "mqar_recall_vs_state.png")
Cell = tuple[str, int, int]  # (variant, d_model, n_pairs)


def state_bytes(run: Run) -> Optional[float]:
    m, T = run.res.get("model") or {}, (run.config.get("train") or {}).get("seq_len")
    kv, rec = m.get("kv_cache_bytes_per_token") or 0, m.get("recurrent_state_bytes") or 0
    return float(kv * T + rec) if T is not None and (kv or rec) else None


def cell_points(runs: Sequence[Run]) -> tuple[dict[Cell, tuple[float, float, Optional[float]]], bool]:
    """(variant, width, pairs) -> (mean recall, its CI, state bytes) at the cell's best lr; and whether
    every point is on held-out seeds."""
    by: dict[Cell, dict[float, dict[int, Run]]] = defaultdict(lambda: defaultdict(dict))
    for r in runs:
        c = r.config
        if (c.get("data") or {}).get("name") == "mqar" and r.ok and r.train.get("metric") is not None:
            key = (attention_label(r), int(c["model"]["d_model"]), int(c["data"]["n_pairs"]))
            by[key][float(c["train"]["lr"])][int(c.get("seed", 0))] = r
    points, all_held = {}, True
    for key, at_lr in by.items():
        tuning = set.intersection(*(set(s) for s in at_lr.values()))
        score = {lr: sum(float(s[i].train["metric"]) for i in tuning) / len(tuning) if tuning else 0.0
                 for lr, s in at_lr.items()}
        best = at_lr[max(score, key=score.get)]
        held = [r for i, r in best.items() if i not in tuning]
        all_held &= bool(held)
        shown = held or list(best.values())
        mean, ci = _mean_band([float(r.train["metric"]) for r in shown])
        points[key] = (mean, ci or 0.0, state_bytes(shown[0]))
    return points, all_held


def write_zoology(runs: Sequence[Run], out: Path, report_md: Path) -> dict[str, Path]:
    """The two PNGs and their section of report.md, when the jobs span several widths or pair counts."""
    points, held = cell_points(runs)
    if len({(w, p) for _, w, p in points}) < 2:
        return {}
    note = "held-out seeds at each cell's best lr" if held else "each cell's best lr, on the seeds it was chosen on"
    made = {FILES[0]: _vs_pairs(points, out / FILES[0], note), FILES[1]: _vs_state(points, out / FILES[1], note)}
    with open(report_md, "a") as f:
        f.write("\n## MQAR recall (Zoology's and Based's axes)\n\n" + f"Points: mean recall ± 95% CI, {note}.\n\n"
                + "".join(f"![{name}]({name})\n\n" for name in made))
    return made


def _lines(points: dict, panel_of, x_of) -> dict:
    """{panel: {variant: sorted [(x, mean, ci)]}}."""
    out: dict = defaultdict(lambda: defaultdict(list))
    for (v, w, p), (mean, ci, state) in points.items():
        x = x_of(w, p, state)
        if x is not None:
            out[panel_of(w, p)][v].append((x, mean, ci))
    return {k: {v: sorted(xs) for v, xs in d.items()} for k, d in sorted(out.items())}


def _draw(panels: dict, path: Path, title: str, xlabel: str, panel_title, log_x: bool) -> Path:
    fig, axes = _new_figure(len(panels))
    variants = sorted({v for d in panels.values() for v in d})
    for ax, (key, lines) in zip(axes, panels.items()):
        for i, v in enumerate(variants):
            if v in lines:
                xs, ys, cis = zip(*lines[v])
                ax.errorbar(xs, ys, yerr=cis, marker="os^vD<>"[i % 7], color=f"C{i}", label=v, capsize=3)
        ax.set_title(panel_title(key))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("recall accuracy")
        ax.set_ylim(-0.02, 1.02)
        if log_x:
            ax.set_xscale("log", base=2)
            _plain_numbers(ax)
        ax.grid(True, alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path, len(variants))


def _vs_pairs(points: dict, path: Path, note: str) -> Path:
    panels = _lines(points, lambda w, p: w, lambda w, p, s: p)
    return _draw(panels, path, f"MQAR recall vs key-value pairs, per width ({note})", "key-value pairs",
                 lambda w: f"d_model={w}", log_x=True)


def _vs_state(points: dict, path: Path, note: str) -> Path:
    panels = _lines(points, lambda w, p: p, lambda w, p, s: s)
    return _draw(panels, path, f"MQAR recall vs recurrent state ({note})", "state bytes per sequence",
                 lambda p: f"{p} pairs", log_x=True)
