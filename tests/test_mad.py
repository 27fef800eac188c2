"""data=mad: MAD's six tasks (layout, targets, vocabularies), their defaults, refusals, training and the report table."""
from __future__ import annotations

import json

import pytest
import torch

from attnbench import load_task
from attnbench.config import ConfigError
from attnbench.train.data import IGNORE, step_generator
from attnbench.train.mad import MAD_DEFAULTS
from attnbench.train.mad_tasks import TASKS, memorization_table

pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(task: str, n: int, T: int, train: bool = False, seed: int = 0, **sizes):
    kw = {**{k: v for k, v in MAD_DEFAULTS[task].items() if k not in ("seq_len", "train_examples")}, **sizes}
    if task == "memorization":
        kw["table"] = memorization_table(kw["vocab_size"], 0)
    return TASKS[task](step_generator(seed, 0, 0), n, T, train=train, **kw)


def _reference_recall_targets(x: list[int], noise_from: int) -> list[int]:
    """Written out from MAD's loop: pairs (k, v); a pair whose key was presented before is asked at its
    key (the model reads k and must say v); noise pairs are never asked; the last pair always is."""
    y, seen = [IGNORE] * len(x), {}
    for j in range(0, len(x) - 1, 2):
        k, v = x[j], x[j + 1]
        if k >= noise_from:
            continue
        if k in seen:
            assert seen[k] == v, "a key keeps its value within the sequence"
            y[j] = v
        seen[k] = v
    y[len(x) - 2] = x[len(x) - 1]
    return y


@pytest.mark.parametrize("task", ["in_context_recall", "noisy_in_context_recall"])
def test_recall_targets_match_the_written_out_reference(task):
    V, noise = MAD_DEFAULTS[task]["vocab_size"], MAD_DEFAULTS[task]["noise_vocab_size"]
    x, y = _gen(task, 64, 32)
    ns = V - noise
    for b in range(64):
        assert y[b].tolist() == _reference_recall_targets(x[b].tolist(), ns)
        keys, vals = x[b, 0::2], x[b, 1::2]
        live = keys < ns
        assert (keys[live] < ns // 2).all() and (vals[live] >= ns // 2).all() and (vals[live] < ns).all()
        assert int(keys[-1]) in keys[:-1][live[:-1]].tolist(), "the probe is a presented key"
    xt, yt = _gen(task, 8, 32, train=True)
    assert torch.equal(yt[:, :-1], xt[:, 1:]) and (yt[:, -1] == IGNORE).all(), "MAD trains on every next token"
    if noise:
        frac = (x[:, 0:-2:2] >= ns).float().mean()
        assert 0.12 < frac < 0.28 and (x[x >= ns] < V).all()  # frac_noise 0.2 of the slots
        assert (y[x >= ns] == IGNORE).all()


def _parse_fuzzy(row: list[int], kmax: int = 3, first_value: int = 7) -> list[tuple[tuple, tuple, int]]:
    """Test sequences, written out: after the padding, keys of kmax key tokens (< 7) then a value of 1..3
    value tokens (7..14). Returns (key, value, position of the key's last token) per pair."""
    i = next(j for j, t in enumerate(row) if t != 15)
    pairs = []
    while i + kmax < len(row):
        key = tuple(row[i : i + kmax])
        j = i + kmax
        while j < len(row) and row[j] >= first_value:
            j += 1
        pairs.append((key, tuple(row[i + kmax : j]), i + kmax - 1))
        i = j
    return pairs


def test_fuzzy_recall_against_a_parse_of_the_sequence():
    T = 64
    x, y = _gen("fuzzy_in_context_recall", 64, T)
    xt, yt = _gen("fuzzy_in_context_recall", 8, T, train=True)
    assert torch.equal(yt[:, :-1], xt[:, 1:]), "MAD trains on every next token"
    probe_seen = 0
    for b in range(64):
        row, tgt = x[b].tolist(), y[b].tolist()
        n_pad = next(i for i, t in enumerate(row) if t != 15)
        assert all(t == 15 for t in row[:n_pad]) and all(t < 15 for t in row[n_pad:])
        pairs = _parse_fuzzy(row)
        first: dict = {}
        for key, value, at in pairs[:-1]:  # the body; the final probe is checked below
            assert len(set(key)) == 3 and max(key) < 7, "test keys: 3 distinct key tokens"
            asked = tgt[at : at + len(value)]
            if any(t != IGNORE for t in asked):  # asked: the value of the key's first occurrence
                assert key in first and tuple(asked[: len(value)]) == first[key][: len(value)]
            first.setdefault(key, value)
        m = sum(1 for t in tgt[-3:] if t != IGNORE)
        probe_key = tuple(row[T - m - 2 : T - m + 1])
        probe_seen += probe_key in {k for k, _, _ in pairs[:-1]}
        assert tgt[-m - 1] == IGNORE and all(7 <= t < 15 for t in tgt[-m:]), "the final probe's value is asked"
    # MAD places the probe pair at a random offset below T - 2·(probe length), but stops filling earlier
    # (T - probe - max motifs), so a late offset leaves it out: its final value cannot be recalled then.
    assert 40 <= probe_seen < 64


def test_selective_copying_layout():
    V, T, c = 16, 64, 8
    x, y = _gen("selective_copying", 32, T, num_tokens_to_copy=c)
    blank, copy = V - 2, V - 1
    nb = T - 2 * c - 1
    assert (x[:, c + nb] == copy).all() and (x[:, c + nb + 1 :] == blank).all()
    assert (y[:, : c + nb + 1] == IGNORE).all()
    for b in range(32):
        first = [t for t in x[b, : c + nb].tolist() if t != blank]
        assert first == y[b, c + nb + 1 :].tolist() and max(first) < V - 2
    assert (x[:, c + nb - 1] != blank).all(), "MAD inserts blanks before tokens, so the last token ends the part"


def test_compression_writes_back_after_the_token():
    x, y = _gen("compression", 16, 32)
    assert (x[:, 16] == 15).all() and (x[:, 17:] == 14).all() and (x[:, :16] < 14).all()
    assert torch.equal(y[:, 16:32], x[:, :16]) and (y[:, :16] == IGNORE).all()


def test_memorization_uses_one_map_for_train_and_test():
    table = memorization_table(256, 0)
    assert len(table) == 127 and len(set(table.tolist())) == 127 and table.min() >= 127 and table.max() <= 254
    x, y = _gen("memorization", 16, 32)
    assert (x[:, 1::2] == 255).all() and (y[:, 0::2] == IGNORE).all()
    assert torch.equal(y[:, 1::2], table[x[:, 0::2]])
    assert not torch.equal(memorization_table(256, 1), table), "the map follows the run's seed"


@pytest.mark.parametrize("task", list(MAD_DEFAULTS))
def test_defaults_are_mads(make_cfg, task):
    cfg = make_cfg("stages=[train]", "data=mad", f"data.task={task}", f"train.seq_len={MAD_DEFAULTS[task]['seq_len']}",
                   f"model.context_length={MAD_DEFAULTS[task]['seq_len']}", "data.train_examples=0")
    d = load_task(cfg).describe()
    for key, value in MAD_DEFAULTS[task].items():
        if key not in ("seq_len", "train_examples"):
            assert d[key] == value


def test_default_training_set_is_mads(make_cfg):
    cfg = make_cfg("stages=[train]", "data=mad", "data.task=memorization", "train.seq_len=32")
    task = load_task(cfg)
    assert task.describe()["train_examples"] == 256 and task.examples(32)[0].shape == (256, 32)


@pytest.mark.parametrize("overrides, key", [
    (["data.task=associative_recall"], "data.task"),
    (["data.task=memorization", "data.frac_noise=0.2"], "data.frac_noise"),
    (["data.task=noisy_in_context_recall", "data.frac_noise=1.0"], "data.frac_noise"),
    (["data.task=selective_copying", "data.num_tokens_to_copy=40"], "train.seq_len"),
    (["data.task=in_context_recall", "train.seq_len=63", "model.context_length=64"], "train.seq_len"),
    (["data.task=in_context_recall", "data.vocab_size=1"], "data.vocab_size"),
    (["data.task=fuzzy_in_context_recall", "data.k_motif_size=0"], "data.k_motif_size"),
    (["data.task=in_context_recall", "data.train_pairs=[2]"], "data.train_pairs"),
])
def test_bad_mad_input_is_one_line(make_cfg, overrides, key):
    with pytest.raises(ConfigError) as exc:
        make_cfg("stages=[train]", "data=mad", *overrides)
    assert key in str(exc.value) and "\n" not in str(exc.value)


def test_unknown_task_exits_before_anything_runs(cli, tmp_path):
    r = cli("data=mad", "data.task=nope", "stages=[train]", "logger=none", f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode == 2 and "data.task=nope" in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "run" / "results.json").exists()


@pytest.mark.parametrize("task", list(MAD_DEFAULTS))
def test_each_task_trains_a_few_steps(make_cfg, tmp_path, task):
    from attnbench.job import run_job

    T = 16 if task in ("compression", "memorization") else 40
    extra = ["data.num_tokens_to_copy=4"] if task == "selective_copying" else []
    cfg = make_cfg("stages=[train]", "logger=none", "device=cpu", "data=mad", f"data.task={task}", *extra,
                   "data.train_examples=64", f"train.seq_len={T}", f"model.context_length={T}", "model.d_model=32",
                   "train.batch_size=8", "train.steps=12", "train.eval_every=6", "train.eval_batches=2", "train.lr=3e-3")
    res = run_job(cfg, tmp_path)["train"]
    assert res["status"] == "ok" and res["metric_name"] == "acc" and 0 <= res["metric"] <= 1
    assert res["data"]["task"] == task and res["data"]["train_examples"] == 64
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]


def test_report_has_the_task_by_variant_table(tmp_path):
    from attnbench.report import build_report

    for i, (task, attn, seed, acc) in enumerate([("compression", "mha", 0, 0.5), ("compression", "mha", 1, 0.7),
                                                 ("compression", "diff", 0, 0.2), ("memorization", "mha", 0, 0.9),
                                                 ("memorization", "diff", 0, 0.4), ("memorization", "diff", 1, 0.6)]):
        d = tmp_path / "sweep" / str(i)
        (d / ".hydra").mkdir(parents=True)
        (d / ".hydra" / "overrides.yaml").write_text(f"- +experiment/mad={task}\n- +experiment/mad_attn={attn}\n- seed={seed}\n")
        res = {"status": "ok", "variant": f"{attn}-rope-layernorm-gelu-L2-D64",
               "config": {"seed": seed, "attn": {"name": attn}, "data": {"name": "mad", "task": task}},
               "train": {"status": "ok", "metric_name": "acc", "metric": acc, "val_loss": 1.0}}
        (d / "results.json").write_text(json.dumps(res))
    rep = build_report([tmp_path / "sweep"], tmp_path / "out", objective="metric")
    md = rep.files["report.md"].read_text()
    assert "## MAD tasks" in md and "| task | diff | mha |" in md
    assert "| compression | 0.2 (1) | 0.60 ± 1.27 (2) |" in md and "| memorization | 0.50 ± 1.27 (2) | 0.9 (1) |" in md
    assert "| mean | 0.35 | 0.75 |" in md
    assert "mad.csv" in rep.files
