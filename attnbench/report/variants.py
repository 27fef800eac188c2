"""Variants for comparison: jobs grouped by their resolved config minus replicate and tuned keys.

A *variant* is a job's resolved config (results.json "config", flattened to dotted keys,
bookkeeping keys left out) minus its *replicate* keys (default `seed`) and its *tuned*
key (`--tune train.lr`). Per variant:
- with a tuned key, the value is chosen on the *tuning replicates* (those present at every
  value of the variant's grid): the best mean objective over them (ties: the first value
  tried); the variant is reported on its *held-out* jobs at that value (replicates the
  choice never saw), or, without any, on the tuning jobs there, flagged `same_runs
  (optimistic)` (heldout.py has the rule and writes the confirmation commands);
- every numeric figure of results.csv gets n, mean, sample std and the 95% CI half-width
  of the mean (stats.mean_ci) over the ok jobs it is reported on;
- against a baseline variant, each figure gets the difference and its 95% CI: paired by
  replicate when both variants have the same replicate values (same seed, same data
  order), Welch otherwise; the objective gets a verdict.
Jobs that are not ok are left out of the statistics and counted in `n_failed` (over every
tuned value of the variant: a learning rate that diverged is a failure worth seeing).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from ..bench.modes import BENCH_MODES
from ..errors import ConfigError
from ..track import catalogue
from . import stats
from .format import num
from .heldout import (choose, complete_values, edge_note, grid_edge, incomplete_text,  # noqa: F401 (re-exported)
                      sort_values)
from .lengths import at_length, common_lengths, length_notes, mode_of
from .runs import Run, differing, flat_config, parse_overrides, shorten
from .tables import csv_row

DEFAULT_REPLICATES = ("seed",)
NOT_FIGURES = ("env_threads",)  # numeric columns of results.csv that describe the machine, not the job
HIGHER_IS_BETTER = catalogue.HIGHER_ENDINGS  # figures outside the catalogue: by their name's ending


@dataclass
class Variant:
    """One variant: its jobs, the chosen tuned value, its statistics and its comparison with the baseline."""

    config: dict  # flat config minus replicate and tuned keys
    name: str  # results.json "variant" (config.naming.variant_name)
    runs: list = field(default_factory=list)  # every job of the variant, at every tuned value
    chosen: list = field(default_factory=list)  # the jobs it is reported on: held-out ones at the chosen value,
    # else every job there (all jobs without a tuned key)
    at_value: list = field(default_factory=list)  # every job at the chosen tuned value
    selection: str = ""  # heldout.HELD_OUT / SAME_RUNS / ONE_VALUE with a tuned key, else ""
    tuning_reps: list = field(default_factory=list)  # the replicates the value was chosen on
    all_reps: list = field(default_factory=list)  # the replicate of every job of the variant
    label: str = ""  # unique name in tables
    short: str = ""  # legend name
    distinct: str = ""  # the config keys that differ between variants ("attn.name=gqa")
    tuned_value: Any = None
    tuned_over: list = field(default_factory=list)  # every value tried, in order
    tuned_means: dict = field(default_factory=dict)  # value -> stats.Estimate of the objective (tuning replicates)
    tuned_edge: str = ""  # "lowest" / "highest" when the chosen value is at an end of a numeric grid
    tuned_incomplete: dict = field(default_factory=dict)  # value -> why it cannot be chosen (a tuning job not ok)
    rows: list = field(default_factory=list)  # csv_row of each ok chosen job
    stats: dict = field(default_factory=dict)  # figure -> stats.Estimate
    diffs: dict = field(default_factory=dict)  # figure -> stats.Difference (with a baseline)
    reps: list = field(default_factory=list)  # the replicate of each ok chosen job ((key, value), ...), for pairing
    diff_method: str = ""
    verdict: str = ""
    is_baseline: bool = False

    @property
    def ok_runs(self) -> list[Run]:
        return [r for r in self.chosen if r.ok]

    @property
    def n(self) -> int:
        return len(self.ok_runs)

    @property
    def n_failed(self) -> int:
        return sum(not r.ok for r in self.runs)


@dataclass
class Comparison:
    variants: list
    objective: str
    lower_is_better: bool
    figures: list  # numeric figures of results.csv, the objective first
    replicates: tuple
    tune: Optional[str] = None
    baseline: Optional[Variant] = None
    baseline_spec: list = field(default_factory=list)  # --baseline as given (for the confirmation report command)
    varying: list = field(default_factory=list)  # config keys whose values differ between variants
    lengths: dict = field(default_factory=dict)  # bench mode -> the length its figures are compared at (None: no
    # length common to every variant: no difference, no verdict); see lengths.py
    notes: list = field(default_factory=list)  # what the table cannot compare, one line each (report.md, the CLI)


# ----------------------------------------------------------------------------- keys and values
def _drops(key: str, names: Sequence[str]) -> bool:
    return key in names or key.startswith(tuple(n + "." for n in names))  # one C call: ~300 keys x 10,000 jobs


def show(v: Any) -> str:
    """A config value as an override would spell it."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    return f"{v:g}" if isinstance(v, float) else str(v)


def replicate_of(run: Run, flat: dict, replicates: Sequence[str]) -> tuple:
    return tuple((k, flat[k]) for k in sorted(flat) if _drops(k, replicates))


def lower_is_better(objective: str, runs: Sequence[Run]) -> bool:
    """val_loss, ms, bytes, params, bpc: lower; tokens/s, MFU, accuracy: higher. `metric` follows metric_name."""
    name = objective
    if objective == "metric":
        names = sorted({str(r.train.get("metric_name")) for r in runs if r.ok and r.train.get("metric_name")})
        if len(names) > 1:
            raise ConfigError(f"--objective metric: the jobs measure different metrics ({', '.join(names)}); "
                              "compare them in separate reports or use --objective val_loss")
        name = names[0] if names else "metric"
    return catalogue.lower_is_better(name, BENCH_MODES)


def numeric_figures(rows: Sequence[dict]) -> list[str]:
    cols = dict.fromkeys(k for r in rows for k in r)
    return [c for c in cols if c not in NOT_FIGURES and any(num(r.get(c)) for r in rows)]


# ----------------------------------------------------------------------------- grouping
def _check_key(key: str, option: str, flats: list[dict]) -> None:
    if flats and not any(_drops(k, [key]) for f in flats for k in f):
        some = ", ".join(sorted({k for f in flats for k in f if k.count(".") <= 1})[:12])
        raise ConfigError(f"{option} {key}: not a key of any job's config (e.g. {some})")


def added_keys(flats: Sequence[dict]) -> set[str]:
    """Config keys that some jobs lack and every job that has them gives one value: a field the code
    gained between two sweeps (a tuning sweep and its confirmation runs, say) at its default. They must
    not split one variant in two (the older jobs ran with that default in effect, before it had a name)."""
    if len(flats) < 2:
        return set()
    keys = dict.fromkeys(k for f in flats for k in f)
    out = set()
    for k in keys:
        values = [f[k] for f in flats if k in f]
        if len(values) < len(flats) and len({json.dumps(v, sort_keys=True, default=str) for v in values}) == 1:
            out.add(k)
    return out


def group(runs: Sequence[Run], replicates: Sequence[str] = DEFAULT_REPLICATES, tune: Optional[str] = None,
          objective: Optional[str] = None, baseline: Optional[Sequence[str]] = None) -> Comparison:
    """Group the runs into variants, choose the tuned value, compute the statistics and the comparison.
    `objective` defaults to val_loss; a sweep without it (bench only) is still grouped, without verdicts."""
    explicit = objective is not None or bool(tune) or bool(baseline)
    objective = objective or "val_loss"
    replicates = tuple(replicates)
    flats = [flat_config(r.config) for r in runs]
    configured = [f for f in flats if f]
    added = added_keys(configured)
    flats = [{k: v for k, v in f.items() if k not in added} for f in flats]
    for key in replicates:
        if key != "seed":  # the default may be absent (a hand-made results.json)
            _check_key(key, "--replicates", configured)
    if tune:
        _check_key(tune, "--tune", configured)
        if tune in replicates:
            raise ConfigError(f"--tune {tune}: also a replicate key; a key is either tuned or replicated")
    rows_all = [csv_row(r) for r in runs if r.ok]
    figures = numeric_figures(rows_all)
    if rows_all and objective not in figures and explicit:
        raise ConfigError(f"--objective {objective}: not a numeric figure of results.csv; one of: "
                          f"{', '.join(figures)}")
    figures = [objective, *(f for f in figures if f != objective)] if objective in figures else figures
    lower = lower_is_better(objective, runs)

    by_key: dict[tuple, Variant] = {}
    run_flat: dict[int, dict] = {}
    for r, f in zip(runs, flats):
        run_flat[id(r)] = f
        cfg = {k: v for k, v in f.items() if not _drops(k, replicates) and k != tune}
        # The variant name joins the key: it never splits real jobs (it is a function of the config) and it
        # keeps apart hand-made results whose config is partial. A job without a config is a variant of its own.
        key = (("", r.variant), *sorted(cfg.items(), key=lambda kv: kv[0])) if cfg else (("", r.variant), ("", str(r.dir)))
        v = by_key.setdefault(key, Variant(config=cfg, name=r.variant))
        v.runs.append(r)
    variants = list(by_key.values())

    for v in variants:
        v.all_reps = [replicate_of(r, run_flat[id(r)], replicates) for r in v.runs]
        choose(v, tune, objective, lower, run_flat, replicates)
        v.reps = [replicate_of(r, run_flat[id(r)], replicates) for r in v.ok_runs]
    varying = _label(variants)
    common = common_lengths(variants)  # bench figures are compared at one length (lengths.py)
    for v in variants:
        v.rows = [at_length(csv_row(r), r, common) for r in v.ok_runs]
        v.stats = {fig: stats.mean_ci([row[fig] for row in v.rows if num(row.get(fig))]) for fig in figures}
    comp = Comparison(variants=variants, objective=objective, lower_is_better=lower, figures=figures,
                      replicates=replicates, tune=tune, varying=varying, baseline_spec=list(baseline or []),
                      lengths=common, notes=length_notes(variants, common) + _unchosen_notes(variants, tune))
    if baseline:
        comp.baseline = find_baseline(variants, baseline, tune)
        _compare(comp)
    return comp


def _unchosen_notes(variants: list[Variant], tune: Optional[str]) -> list[str]:
    """A line for each variant whose tuned value could not be chosen: no value is complete (heldout.completeness)."""
    return [f"{v.label}: no {tune} value ended ok on every tuning replicate ({incomplete_text(v, show)}); "
            "nothing chosen, so the variant has no figures" for v in variants
            if tune and v.tuned_value is None and v.tuned_incomplete]


def _label(variants: list[Variant]) -> list[str]:
    """Unique labels: the variant name, plus the config keys that tell apart variants sharing it."""
    varying = differing([v.config for v in variants]) if len(variants) > 1 else []
    for v in variants:
        v.distinct = " ".join(f"{k}={show(v.config.get(k))}" for k in varying if k in v.config)
    by_name: dict[str, list[Variant]] = {}
    for v in variants:
        by_name.setdefault(v.name, []).append(v)
    for same in by_name.values():
        keys = differing([v.config for v in same]) if len(same) > 1 else []
        for v in same:
            extra = " ".join(f"{k}={show(v.config.get(k))}" for k in keys[:4] if k in v.config)
            v.label = v.name + (f" [{extra}]" if extra else "")
    seen: dict[str, int] = {}
    for v in variants:  # still equal (e.g. two unreadable jobs of one name): number them
        seen[v.label] = seen.get(v.label, 0) + 1
        if seen[v.label] > 1:
            v.label += f" #{seen[v.label]}"
    shorts, _ = shorten([v.name for v in variants], [v.label for v in variants])
    for v, s in zip(variants, shorts):
        v.short = s
    return varying


# ----------------------------------------------------------------------------- baseline
def _matches(v: Variant, key: str, value: str) -> Optional[bool]:
    """Whether the variant's config has key=value; None when the config has no such key.
    A group name matches its `.name` (attn=mha is attn.name=mha)."""
    import yaml

    for k in (key, f"{key}.name"):
        if k in v.config:
            got = v.config[k]
            try:
                want = yaml.safe_load(value)
            except yaml.YAMLError:
                want = value
            if isinstance(want, (list, dict)):
                want = json.dumps(want, sort_keys=True)
            if num(got) and isinstance(want, str):  # YAML reads 1e-3 as text; Hydra as a float
                try:
                    want = float(want)
                except ValueError:
                    pass
            return got == want or show(got) == value or str(got) == value
    return None


def find_baseline(variants: list[Variant], overrides: Sequence[str], tune: Optional[str]) -> Variant:
    spec = " ".join(overrides)
    parsed = parse_overrides([o for ov in overrides for o in ov.split()])
    if tune and tune in parsed:
        raise ConfigError(f"--baseline {spec}: {tune} is tuned per variant, so it cannot pick the baseline")
    for key, value in parsed.items():
        if not value:
            raise ConfigError(f"--baseline {spec}: write KEY=VALUE (e.g. attn=mha), got '{key}'")
        if all(_matches(v, key, value) is None for v in variants):
            raise ConfigError(f"--baseline {spec}: no job's config has {key} or {key}.name")
    hits = [v for v in variants if all(_matches(v, k, val) for k, val in parsed.items())]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        have = {show(v.config.get(k) if k in v.config else v.config.get(f"{k}.name")) for k in parsed
                for v in variants}
        raise ConfigError(f"--baseline {spec}: matches no variant (values present: {', '.join(sorted(have))})")
    keys = differing([v.config for v in hits])[:5]
    raise ConfigError(f"--baseline {spec}: matches {len(hits)} variants; add one of {', '.join(keys)} to pick one")


def _compare(comp: Comparison) -> None:
    base = comp.baseline
    assert base is not None
    base_reps = base.reps
    for v in comp.variants:
        v.is_baseline = v is base
        reps = v.reps
        paired = (len(reps) >= 2 and len(set(reps)) == len(reps) and len(set(base_reps)) == len(base_reps)
                  and set(reps) == set(base_reps) and v is not base)
        v.diff_method = "" if v is base else "paired" if paired else "welch"
        v.diffs = {}
        for fig in ([] if v is base else comp.figures):  # the baseline's own row has no difference
            if (mode := mode_of(fig)) in comp.lengths and comp.lengths[mode] is None:
                continue  # measured at different lengths: not compared (lengths.py)
            x = {rep: row[fig] for rep, row in zip(reps, v.rows) if num(row.get(fig))}
            b = {rep: row[fig] for rep, row in zip(base_reps, base.rows) if num(row.get(fig))}
            if not paired:  # Welch needs no keys; keep duplicate replicates as separate values
                x = {i: row[fig] for i, row in enumerate(v.rows) if num(row.get(fig))}
                b = {i: row[fig] for i, row in enumerate(base.rows) if num(row.get(fig))}
            v.diffs[fig] = stats.difference(x, b, paired)
        if v is base:
            v.verdict = "baseline"
        else:
            v.verdict = stats.verdict(v.diffs[comp.objective], comp.lower_is_better) if comp.objective in v.diffs else ""


# ----------------------------------------------------------------------------- variants.csv rows
def variant_rows(comp: Comparison) -> list[dict[str, Any]]:
    """One row per variant: the columns of variants.csv."""
    out = []
    for v in comp.variants:
        row: dict[str, Any] = {"variant": v.label, "name": v.name, "config": v.distinct, "n": v.n,
                               "n_failed": v.n_failed}
        if comp.tune:
            row[comp.tune] = v.tuned_value
            row["tuned_over"] = ",".join(show(x) for x in v.tuned_over)
            row["tuned_at_edge"] = v.tuned_edge
            row["tuned_incomplete"] = incomplete_text(v, show)
            row["selection"] = v.selection
            row["tuning_replicates"] = _reps_text(v.tuning_reps)
            row["tuned_means"] = "; ".join(
                f"{show(x)}: {e.mean:.6g} (n={e.n})" if e.mean is not None else f"{show(x)}: - (n=0)"
                for x, e in v.tuned_means.items())
        row["replicates"] = _reps_text(v.reps)
        row.update({f"{mode}_seq_len": T for mode, T in comp.lengths.items()})  # where bench figures are compared
        if comp.baseline is not None:
            row["diff_method"] = v.diff_method
            row["verdict"] = v.verdict
        for fig in comp.figures:
            e = v.stats.get(fig) or stats.Estimate(0, None)
            row[f"{fig}_mean"], row[f"{fig}_std"], row[f"{fig}_ci95"] = e.mean, e.std, e.ci95
            if comp.baseline is not None:
                d = v.diffs.get(fig)
                row[f"{fig}_diff"] = None if d is None else d.diff
                row[f"{fig}_diff_ci95"] = None if d is None else d.ci95
        out.append(row)
    return out


def _reps_text(reps: Sequence[tuple]) -> str:
    """'seed=0,1,2' for a list of replicates ((key, value), ...)."""
    keys = dict.fromkeys(k for rep in reps for k, _ in rep)
    return " ".join(f"{k}=" + ",".join(show(x) for x in sort_values(list(dict.fromkeys(dict(rep).get(k)
                                                                                    for rep in reps))))
                    for k in keys)


def run_variant(comp: Comparison) -> dict[int, tuple[str, bool]]:
    """id(run) -> (variant label, whether the run is at the chosen tuned value)."""
    out = {}
    for v in comp.variants:
        at = {id(r) for r in v.at_value}
        for r in v.runs:
            out[id(r)] = (v.label, id(r) in at)
    return out


def reported_runs(comp: Comparison) -> set[int]:
    """id(run) of every job whose figures a variant reports (held-out jobs where there are any)."""
    return {id(r) for v in comp.variants for r in v.chosen}
