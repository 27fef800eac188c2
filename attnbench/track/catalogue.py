"""The catalogue of figures: every number a job records that the report, the sweep summary and the dashboard
show, each one entry here.

A `Figure` names its results.csv column (a public name, never renamed), its title and unit (table
headers, report.md, plot axes), its direction (lower or higher is better; "" for a count, a length or
text, which are shown but never ranked), where it sits in results.json and under which W&B summary key
the job's W&B run holds it (track/wandb_sink.py: summary_figures writes results.json's sections with
"/"), whether it is a per-length bench figure (one column per bench mode, read at the largest
sequence length the mode measured ok), and its column in the sweep summary (summary.csv).

Consumers: report/tables.py (results.csv columns), report/variants.py (direction; variants.csv has
every numeric results.csv column), report/markdown.py (table headers), report/plots.py (bench axis
labels), report/dashboard_panels.py (W&B keys), sweep/summary.py (summary.csv columns) and
report/console.py (the bench table). tests/test_catalogue.py enumerates it against results.csv,
summary.csv and the dashboard mapping. It lives in track/ (beside the results.json schema) so that
sweep/ needs nothing from report/ to name a figure.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

LOWER, HIGHER, UNRANKED = "lower", "higher", ""


@dataclass(frozen=True)
class Figure:
    name: str  # results.csv column; per-length: the key after "<mode>_" (median_ms -> forward_median_ms)
    title: str
    unit: str
    direction: str  # LOWER / HIGHER / UNRANKED
    path: tuple  # in results.json: ("model", "params"); per-length: ("bench", "<key>") of a bench row
    per_length: bool = False
    summary: str = ""  # summary.csv column ("" = the results.csv name; None-like "-" = not in the summary)
    csv_name: str = ""  # results.csv column when it is not `name` (train.status -> train_status)
    in_wandb: bool = True  # False: no W&B summary key of its own (a bench row's length is part of its keys)

    @property
    def column(self) -> str:
        return self.csv_name or self.name

    @property
    def wandb_key(self) -> str:
        """The W&B summary key ("" for none); per-length figures: a template with {mode} and {T}."""
        if not self.in_wandb:
            return ""
        if self.per_length:
            return f"bench/{{mode}}/T{{T}}/{self.path[-1]}"
        return "/".join(self.path)

    @property
    def summary_column(self) -> Optional[str]:
        return None if self.summary == "-" else (self.summary or self.column)


def _model(name: str, title: str, unit: str, **kw) -> Figure:
    return Figure(name, title, unit, LOWER, ("model", name), **kw)


def _bench(name: str, title: str, unit: str, direction: str) -> Figure:
    return Figure(name, title, unit, direction, ("bench", name), per_length=True, summary="-",
                  in_wandb=name != "seq_len")


def _train(name: str, title: str, unit: str, direction: str = LOWER, train_prefix: bool = False, **kw) -> Figure:
    return Figure(name, title, unit, direction, ("train", name), csv_name=f"train_{name}" if train_prefix else "",
                  **kw)


MODEL = (
    _model("params", "params", "parameters", summary="params"),
    _model("non_embedding_params", "non-embedding params", "parameters"),
    _model("flops_per_token_fwd", "forward FLOPs/token", "FLOP/token"),
    _model("flops_per_token_train", "train FLOPs/token", "FLOP/token"),
    _model("kv_cache_bytes_per_token", "KV cache bytes/token", "bytes/token"),
    _model("recurrent_state_bytes", "recurrent state bytes", "bytes/sequence"),
)
BENCH = (  # per bench mode, at the largest sequence length measured ok
    _bench("seq_len", "T", "tokens", UNRANKED),
    _bench("median_ms", "median latency", "ms", LOWER),
    _bench("p10_ms", "p10 latency", "ms", LOWER),
    _bench("p90_ms", "p90 latency", "ms", LOWER),
    _bench("tokens_per_s", "throughput", "tokens/s", HIGHER),
    _bench("peak_mem_bytes", "peak memory", "bytes", LOWER),
    _bench("mfu", "MFU", "fraction of peak", HIGHER),
)
TRAIN = (
    _train("status", "train status", "", UNRANKED, train_prefix=True, summary="-"),
    _train("steps", "train steps", "steps", UNRANKED, train_prefix=True),
    _train("tokens", "train tokens", "tokens", UNRANKED, train_prefix=True),
    _train("wall_s", "train wall time", "s", LOWER, train_prefix=True),
    _train("tokens_per_s", "train tok/s", "tokens/s", HIGHER, train_prefix=True),
    _train("train_loss", "train loss", "nats/token"),
    _train("val_loss", "val loss", "nats/token"),
    _train("metric_name", "metric name", "", UNRANKED),
    _train("metric", "metric", "metric_name's unit", LOWER),  # direction follows metric_name: see direction()
)
PROBES = (  # of the trained model (Findings 10, 11)
    _train("max_attn_logit", "max attention logit", "logit"),
    _train("first_token_attn", "attention on the first token", "fraction", UNRANKED),
    _train("first_token_attn_max", "max attention on the first token", "fraction", UNRANKED),
    _train("max_activation", "max activation", "activation", UNRANKED),
    _train("mean_gate", "mean gate value", "fraction", UNRANKED),
)
# One column per evaluation length: val_loss_T<t>, from results.json train.val_loss_by_len.<t>
VAL_LOSS_BY_LEN = Figure("val_loss_T", "val loss at T={T}", "nats/token", LOWER, ("train", "val_loss_by_len"),
                         summary="-")
FIGURES: tuple[Figure, ...] = (*MODEL, *BENCH, *TRAIN, *PROBES, VAL_LOSS_BY_LEN)
# The summary.csv figure columns, in summary.csv's order (the rest follow COLUMNS' bookkeeping, see sweep/summary.py)
SUMMARY_FIRST = ("params", "forward_ms", "forward_T", "train_tokens_per_s", "val_loss", "metric_name", "metric")
HIGHER_ENDINGS = ("tokens_per_s", "mfu", "acc")  # figures outside the catalogue (a metric's name): by ending


def find(column: str, modes: tuple = ()) -> Optional[Figure]:
    """The figure of a results.csv column ("forward_median_ms" with forward among `modes`, "val_loss_T128")."""
    for f in FIGURES:
        if not f.per_length and f is not VAL_LOSS_BY_LEN and f.column == column:
            return f
    if column.startswith(VAL_LOSS_BY_LEN.name) and column[len(VAL_LOSS_BY_LEN.name):].isdigit():
        return VAL_LOSS_BY_LEN
    for mode in modes:
        if column.startswith(mode + "_"):
            return next((f for f in BENCH if f.name == column[len(mode) + 1:]), None)
    return None


def lower_is_better(name: str, modes: tuple = ()) -> bool:
    """A figure's direction; a name outside the catalogue (a metric such as recall_acc) by its ending."""
    f = find(name, modes)
    if f is not None and f.direction and f.name != "metric":
        return f.direction == LOWER
    return not name.endswith(HIGHER_ENDINGS)


def summary_others() -> list[Figure]:
    """The figures summary.csv appends after its first ones (so a new figure reaches summary.csv)."""
    return [f for f in FIGURES if f.summary_column and f.summary_column not in SUMMARY_FIRST]


def summary_columns() -> list[str]:
    """The summary.csv figure columns: the summary's first ones, then every other figure."""
    return [*SUMMARY_FIRST, *(str(f.summary_column) for f in summary_others())]


def value(res: dict, f: Figure) -> object:
    """The figure's value in a results.json dict (not per-length figures)."""
    node: object = res
    for part in f.path:
        node = node.get(part) if isinstance(node, dict) else None
    return node


__all__ = ["BENCH", "FIGURES", "Figure", "HIGHER", "LOWER", "MODEL", "PROBES", "SUMMARY_FIRST", "TRAIN",
           "UNRANKED", "VAL_LOSS_BY_LEN", "find", "lower_is_better", "summary_columns", "summary_others", "value"]
