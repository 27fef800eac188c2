"""A variant's colour and marker are the same in every plot, also when another variant lacks a plot's data."""
from __future__ import annotations

import numpy as np
from matplotlib.collections import PathCollection
from matplotlib.markers import MarkerStyle

from attnbench.report import plots


def _train(loss: float, by_len: dict | None) -> dict:
    return {"tokens_per_s": 1000.0 / loss, "val_loss": loss, **({"val_loss_by_len": by_len} if by_len else {})}


def _curve(loss: float) -> list[dict]:
    return [{"step": s, "train_loss": loss + 1 / s} for s in range(1, 4)] + [{"step": 3, "val_loss": loss}]


def _series() -> list[plots.Series]:
    """Three variants; the first has no val_loss_by_len (so val_loss_by_len's filtered list starts at the
    second) and no metrics.jsonl (so training_curves' list does too)."""
    a = plots.Series(label="a", trains=[_train(3.0, None)], train_len=64)
    b = plots.Series(label="b", trains=[_train(2.5, {"64": 2.5, "128": 2.7})], curves=[_curve(2.5)], train_len=64)
    c = plots.Series(label="c", trains=[_train(2.0, {"64": 2.0, "128": 2.1})], curves=[_curve(2.0)], train_len=64)
    return [a, b, c]


def _marker_of(handle) -> str:
    """The marker a legend handle draws: a Line2D's marker, or the MARKERS entry whose path a scatter uses."""
    line = handle[0] if isinstance(handle, tuple) or hasattr(handle, "lines") else handle
    if isinstance(line, PathCollection):
        got = line.get_paths()[0].vertices
        for m in plots.MARKERS:
            style = MarkerStyle(m)
            want = style.get_path().transformed(style.get_transform()).vertices
            if want.shape == got.shape and np.allclose(want, got):
                return m
        raise AssertionError("scatter marker not among MARKERS")
    return line.get_marker()


def _color_of(handle) -> tuple:
    line = handle[0] if isinstance(handle, tuple) or hasattr(handle, "lines") else handle
    rgba = line.get_facecolor()[0] if isinstance(line, PathCollection) else line.get_color()
    return tuple(np.round(np.asarray(rgba, dtype=float)[:3], 4))


def test_marker_and_colour_are_the_same_in_every_plot(tmp_path, monkeypatch):
    series = _series()
    plots.assign_colors(series)
    figs = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path, n, legends=None: figs.setdefault(path.name, fig) and path)
    plots.val_loss_by_len(series, tmp_path / "by_len.png", "t")
    plots.quality_vs_throughput(series, tmp_path / "pareto.png", "t")
    plots.training_curves(series, tmp_path / "curves.png", "t")
    assert set(figs) == {"by_len.png", "pareto.png", "curves.png"}
    seen: dict[str, set] = {}
    for name, fig in figs.items():
        for ax in fig.axes:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                if label in "abc" or label.split(" ")[0] in ("a", "b", "c"):
                    if name == "curves.png" and not (isinstance(handle, tuple) or hasattr(handle, "lines")):
                        seen.setdefault(label, set()).add(("color", _color_of(handle)))
                        continue  # the train-loss line has no marker; its val markers carry no label
                    seen.setdefault(label, set()).add((_marker_of(handle), _color_of(handle)))
    # each variant's marker follows its place in the full list: a, b, c -> MARKERS[0], [1], [2] everywhere
    want = {s.label: (plots.MARKERS[i], tuple(np.round(np.asarray(s.color, dtype=float)[:3], 4)))
            for i, s in enumerate(series)}
    assert set(seen) == {"a", "b", "c"}
    for label, got in seen.items():
        for item in got:
            if item[0] == "color":
                assert item[1] == want[label][1], label
            else:
                assert item == want[label], (label, item, want[label])
    assert (want["b"][0], want["b"][1]) in seen["b"]  # b keeps its marker in val_loss_by_len, where a is missing
