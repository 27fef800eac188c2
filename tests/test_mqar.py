"""data=mqar (Zoology's MQAR), the fixed training set, load_task, and their bad-input refusals."""
from __future__ import annotations

import math

import pytest
import torch

import attnbench
from attnbench.config import ConfigError
from attnbench.train.data import IGNORE, step_generator
from attnbench.train.mqar import ZoologyMQAR, power_law
from attnbench.train.pool import FixedPool

pytestmark = pytest.mark.usefixtures("one_thread")


def _mqar(**kw) -> ZoologyMQAR:
    args = dict(vocab_size=64, n_pairs=4, n_queries=None, power_a=0.01, seed=0)
    return ZoologyMQAR(**{**args, **kw})


def test_zoology_docstring_example_layout():
    """Zoology's docstring example (vocab 12, 2 pairs, length 16, zeros kept):
    inputs  2 8 4 7 0 0 4 0 0 0 0 0 2 0 0 ...; labels 7 at the first query, 8 at the second."""
    d = _mqar(vocab_size=12, n_pairs=2, random_non_queries=False)
    x, y = d.train_batch(0, 200, 16)
    keys, vals = x[:, 0:4:2], x[:, 1:4:2]
    assert ((keys >= 1) & (keys <= 5)).all() and ((vals >= 6) & (vals <= 11)).all()  # 1..V/2-1, V/2..V-1
    for b in range(200):
        q = (y[b] != IGNORE).nonzero().flatten().tolist()
        assert len(q) == 2 and all(t >= 4 and t % 2 == 0 for t in q), "queries at even offsets after the context"
        assert sorted(x[b, q].tolist()) == sorted(keys[b].tolist()), "every key queried once"
        lookup = dict(zip(keys[b].tolist(), vals[b].tolist()))
        assert all(int(y[b, t]) == lookup[int(x[b, t])] for t in q)
        rest = torch.ones(16, dtype=torch.bool)
        rest[:4], rest[q] = False, False
        assert (x[b, rest] == 0).all()


def test_keys_and_values_distinct_and_fillers_random():
    d = _mqar(vocab_size=40, n_pairs=16)  # 19 keys, 20 values: 16 of each leaves little room
    x, y = d.train_batch(3, 64, 96)
    keys, vals = x[:, 0:32:2], x[:, 1:32:2]
    assert all(len(set(r.tolist())) == 16 for r in keys) and all(len(set(r.tolist())) == 16 for r in vals)
    assert ((keys >= 1) & (keys < 20)).all() and ((vals >= 20) & (vals < 40)).all()
    assert ((y != IGNORE).sum(1) == 16).all()
    filler = x[:, 32:][y[:, 32:] == IGNORE]
    assert (filler == 0).float().mean() < 0.1 and filler.max() > 20, "Zoology's zeros become random tokens"


def test_gaps_follow_zoology_power_law():
    """One query per sequence: its gap's frequency matches Zoology's p(g) ∝ a·(g+1)^(a-1), written out."""
    space, a = 10, 0.01
    ref = [a * i ** (a - 1) for i in range(1, space + 1)]
    ref = [r / sum(ref) for r in ref]
    assert torch.allclose(power_law(space, a), torch.tensor(ref, dtype=torch.float64))
    d = _mqar(vocab_size=64, n_pairs=2, n_queries=1, random_non_queries=False)
    x, y = d.train_batch(0, 20000, 4 + 2 * space)
    gap = ((y != IGNORE).float().argmax(1) - 4) // 2
    freq = torch.bincount(gap, minlength=space).double() / len(gap)
    assert (freq - torch.tensor(ref)).abs().max() < 0.015
    assert ref[0] > 0.3 and freq[0] > freq[1] > freq[-1]


def test_power_a_one_is_uniform():
    d = _mqar(n_pairs=2, n_queries=1, power_a=1.0, random_non_queries=False)
    y = d.train_batch(0, 20000, 24)[1]
    gap = ((y != IGNORE).float().argmax(1) - 4) // 2
    freq = torch.bincount(gap, minlength=10).double() / len(gap)
    assert (freq - 0.1).abs().max() < 0.015


def test_fewer_queries_ask_distinct_keys():
    d = _mqar(n_pairs=8, n_queries=3)
    x, y = d.train_batch(0, 50, 64)
    q = y != IGNORE
    assert (q.sum(1) == 3).all()
    for b in range(50):
        asked = x[b][q[b]].tolist()
        assert len(set(asked)) == 3 and set(asked) <= set(x[b, 0:16:2].tolist())


def test_training_mixture_of_pair_counts():
    d = _mqar(vocab_size=128, n_pairs=8, train_pairs=[2, 4, 8])
    x, y = d.train_batch(0, 30, 64)
    counts = (y != IGNORE).sum(1)
    assert sorted(counts.tolist()) == [2] * 10 + [4] * 10 + [8] * 10
    assert counts[:10].tolist() != [2] * 10 or counts[10:20].tolist() != [4] * 10, "shuffled"
    vx, vy = d.val_batches(1, 16, 64)[0]
    assert ((vy != IGNORE).sum(1) == 8).all(), "validation uses data.n_pairs"


def test_fixed_pool_reads_epochs_of_the_same_examples():
    base = _mqar()
    pool = FixedPool(base, 10)
    seen = torch.cat([pool.train_batch(s, 5, 32)[0] for s in range(4)])  # 2 epochs of 10
    first, second = seen[:10], seen[10:]
    as_set = lambda t: sorted(map(tuple, t.tolist()))  # noqa: E731
    assert as_set(first) == as_set(second) == as_set(pool.examples(32)[0].long())
    assert not torch.equal(first, second), "each epoch in its own order"
    assert torch.equal(pool.train_batch(3, 5, 32)[0], FixedPool(_mqar(), 10).train_batch(3, 5, 32)[0])
    x, _ = pool.train_batch(1, 7, 32)  # a batch across the epoch boundary: stream positions 7..13
    every = pool.examples(32)[0].long()
    assert torch.equal(x, every[torch.cat([pool.order(0)[7:], pool.order(1)[:4]])])
    assert pool.n_pairs == 4 and pool.describe()["train_examples"] == 10


def test_synthetic_takes_a_fixed_set_too(make_cfg):
    task = attnbench.load_task(make_cfg("stages=[train]", "data.train_examples=8"))
    assert isinstance(task, FixedPool) and task.examples(64)[0].shape == (8, 64)
    assert task.describe()["name"] == "synthetic" and task.describe()["train_examples"] == 8


def test_load_task_is_public_for_every_data_option(make_cfg, tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("some text for a corpus\n" * 40)
    for over in (["data=synthetic"], ["data=mqar", "data.vocab_size=64"], ["data=mad", "data.train_examples=0"],
                 ["data=text", f"data.path={f}"]):
        task = attnbench.load_task(make_cfg(*over))
        x, y = task.train_batch(0, 4, 64)
        vx, vy = task.val_batches(2, 4, 64)[0]
        assert x.shape == y.shape == vx.shape == vy.shape == (4, 64) and x.dtype == torch.long
        assert ((y == IGNORE) | ((y >= 0) & (y < task.vocab_size))).all()
        assert (x < task.vocab_size).all() and (x >= 0).all()
    assert "load_task" in attnbench.__all__


@pytest.mark.parametrize("overrides, key", [
    (["data.power_a=0"], "data.power_a"),
    (["data.power_a=-1"], "data.power_a"),
    (["data.vocab_size=64", "data.n_pairs=40", "train.seq_len=256", "model.context_length=256"], "data.vocab_size"),
    (["data.n_pairs=20"], "train.seq_len"),
    (["data.n_queries=9"], "data.n_queries"),
    (["data.train_pairs=[4,40]"], "data.train_pairs"),
    (["data.train_examples=-1"], "data.train_examples"),
    (["data.task=compression"], "data.task"),
])
def test_bad_mqar_input_is_one_line(make_cfg, overrides, key):
    with pytest.raises(ConfigError) as exc:
        make_cfg("stages=[train]", "data=mqar", *overrides)
    assert key in str(exc.value) and "\n" not in str(exc.value)


def test_bad_mqar_input_exits_before_anything_runs(cli, tmp_path):
    r = cli("data=mqar", "data.power_a=0", "stages=[train]", "logger=none", "hydra.run.dir=" + str(tmp_path / "run"))
    assert r.returncode == 2 and "data.power_a=0" in r.stderr
    assert not (tmp_path / "run" / "results.json").exists()


def test_mqar_trains_and_reports_recall(make_cfg, tmp_path):
    from attnbench.job import run_job

    cfg = make_cfg("stages=[train]", "logger=none", "device=cpu", "data=mqar", "data.vocab_size=32", "data.n_pairs=2",
                   "train.seq_len=16", "model.context_length=16", "train.batch_size=16", "train.steps=40",
                   "train.eval_every=0", "train.eval_batches=2", "train.lr=3e-3", "ffn=none", "model.d_model=32")
    res = run_job(cfg, tmp_path)["train"]
    assert res["status"] == "ok" and res["metric_name"] == "recall_acc" and 0 <= res["metric"] <= 1
    assert res["data"]["name"] == "mqar" and res["val_loss"] < math.log(32) - 0.3  # learnt the values' half


def test_step_batches_are_pure_functions_of_seed_and_step():
    a, b = _mqar(train_pairs=[2, 4]), _mqar(train_pairs=[2, 4])
    assert torch.equal(a.train_batch(7, 8, 32)[0], b.train_batch(7, 8, 32)[0])
    assert not torch.equal(a.train_batch(7, 8, 32)[0], a.train_batch(8, 8, 32)[0])
    g1, g2 = step_generator(0, 1, 32), step_generator(0, 1, 32)
    assert torch.equal(a.generate(g1, 4, 32, 4, 4)[0], a.generate(g2, 4, 32, 4, 4)[0])
