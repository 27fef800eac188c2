"""Datasets: the associative-recall layout, text splits and tokenizers, data-config validation."""
from __future__ import annotations

import pytest
import torch

from attnbench.config import ConfigError
from attnbench.config.spec import resolve_spec
from attnbench.model import build_model
from attnbench.train.data import IGNORE, AssociativeRecall, TextData, prepare_data


def test_recall_layout_and_answers():
    d = AssociativeRecall(vocab_size=33, n_pairs=4, n_queries=3, seed=0)
    x, y = d.train_batch(step=5, batch_size=16, seq_len=32)
    assert x.shape == y.shape == (16, 32)
    keys, vals = x[:, 0:8:2], x[:, 1:8:2]
    assert ((keys >= 1) & (keys <= d.n_keys)).all() and (vals > d.n_keys).all() and (vals < 33).all()
    assert all(len(set(row.tolist())) == 4 for row in keys), "keys must be distinct within a sequence"
    assert (x[:, 8:26] == 0).all(), "padding between the context and the queries"
    assert (x[:, 27::2] == 0).all(), "answers are not fed back after their queries"
    answer = y != IGNORE
    assert answer.sum() == 16 * 3 and answer[:, 26::2].all(), "targets only at query keys, at the end"
    for b in range(16):
        lookup = dict(zip(keys[b].tolist(), vals[b].tolist()))
        for t in range(26, 32, 2):
            assert y[b, t] == lookup[int(x[b, t])]
    assert d.min_distance(32) == 26 - 7


def test_recall_is_a_function_of_seed_and_step():
    a, b = AssociativeRecall(64, 8, None, seed=1), AssociativeRecall(64, 8, None, seed=1)
    assert torch.equal(a.train_batch(3, 4, 64)[0], b.train_batch(3, 4, 64)[0])
    assert not torch.equal(a.train_batch(3, 4, 64)[0], a.train_batch(4, 4, 64)[0])
    assert not torch.equal(a.train_batch(3, 4, 64)[0], AssociativeRecall(64, 8, None, seed=2).train_batch(3, 4, 64)[0])
    v1, v2 = a.val_batches(2, 4, 64), b.val_batches(2, 4, 64)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(v1, v2))


def _answer_logits(model, x):
    with torch.no_grad():
        return model(x)[:, -2 * 4 :: 2]  # logits at the query keys


@pytest.mark.parametrize("window, recalls", [(8, False), (None, True)])
def test_window_shorter_than_the_key_query_distance_cannot_see_the_context(make_cfg, window, recalls):
    """Changing the key-value context must not move the answer logits of a local model whose receptive
    field (layers x (window - 1)) is shorter than the distance; with full attention it must."""
    over = ["attn=local", f"attn.window={window}"] if window else []
    cfg = make_cfg("stages=[train]", "data.n_pairs=4", "data.n_queries=4", "train.seq_len=48", "pos=rope", *over)
    data = prepare_data(cfg)
    if window:
        assert cfg.model.n_layers * (window - 1) < data.min_distance(48)
    model = build_model(cfg, vocab_size=data.vocab_size).eval()
    x, _ = data.train_batch(0, 4, 48)
    x2 = x.clone()
    x2[:, 1:8:2] = data.n_keys + 1 + (x[:, 1:8:2] - data.n_keys) % data.n_values  # other values
    same = torch.allclose(_answer_logits(model, x), _answer_logits(model, x2))
    assert same is not recalls


def test_text_char_split_and_windows():
    text = "abcdefghij" * 100
    d = TextData(text, "char", 0.1, seed=0)
    assert d.vocab_size == 10 and len(d.train_ids) == 900 and len(d.val_ids) == 100
    x, y = d.train_batch(0, 4, 16)
    assert x.shape == (4, 16) and torch.equal(x[:, 1:], y[:, :-1])
    assert d.decode(x[0].tolist()) in text
    vb = d.val_batches(3, 4, 16)
    assert len(vb) == 3 and all(torch.equal(a[0], b[0]) for a, b in zip(vb, d.val_batches(3, 4, 16)))
    assert d.not_applicable(100) and d.not_applicable(99) is None


def test_text_byte_tokenizer_roundtrip():
    text = "héllo wörld\n" * 20
    d = TextData(text, "byte", 0.1, seed=0)
    assert d.vocab_size == 256
    assert d.decode(torch.cat([d.train_ids, d.val_ids]).tolist()) == text


def test_prepare_data_sets_vocab(make_cfg, tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("hello world, hello attention\n" * 50)
    cfg = make_cfg("stages=[train]", "data=text", f"data.path={f}")
    composed = cfg.model.vocab_size
    data = prepare_data(cfg)
    assert data.vocab_size == len(set(f.read_text()))
    assert cfg.model.vocab_size == composed  # the config is not changed in place: the spec carries the vocabulary
    spec = resolve_spec(cfg, vocab_size=data.vocab_size)
    assert spec.vocab_size == spec.cfg.model.vocab_size == build_model(spec).wte.num_embeddings == data.vocab_size
    cfg = make_cfg("stages=[train]", "data=text", f"data.path={f}", "data.tokenizer=byte")
    assert prepare_data(cfg).vocab_size == 256


@pytest.mark.parametrize("overrides, key", [
    (["data=text"], "data.path"),
    (["data=text", "data.path=/no/such/file.txt"], "data.path"),
    (["data=shakespeare", "data.url=null"], "data.path"),
    (["data=text", "data.path=README.md", "data.tokenizer=word"], "data.tokenizer"),
    (["data.vocab_size=64", "data.n_pairs=20"], "train.seq_len"),
    (["data.n_queries=0"], "data.n_queries"),
    (["data.vocab_size=8"], "data.vocab_size"),
    (["train.lr=0"], "train.lr"),
    (["train.batch_size=0"], "train.batch_size"),
    (["train.eval_seq_lens=[64,0]"], "train.eval_seq_lens"),
])
def test_bad_train_and_data_config_is_one_line(make_cfg, overrides, key):
    with pytest.raises(ConfigError) as exc:
        make_cfg("stages=[train]", *overrides)
    msg = str(exc.value)
    assert key in msg and "\n" not in msg


def test_data_checks_only_when_training(make_cfg):
    make_cfg("stages=[bench]", "data=text")  # no path needed when nothing trains
