"""The attention-sink probes recorded after training (Finding 11: first-token attention, max
activation, mean gate) and train.eval_window (Finding 12: window attention at evaluation only)."""
from __future__ import annotations

import pytest
import torch

from attnbench import ConfigError, build_model, load_config
from attnbench.model.attention import first_token_mass
from attnbench.model.kernels import MaskSpec, allowed_mask
from attnbench.model.probes import first_token_attention, max_activation, mean_gate
from attnbench.train.evaluate import eval_lengths, evaluate

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = ["stages=[]", "device=cpu", "model.d_model=32", "model.n_layers=2", "attn.n_heads=4", "model.vocab_size=64",
        "model.context_length=64", "pos=rope", "attn.impl=manual"]
FAST = ["stages=[train]", "logger=none", "device=cpu", "train.batch_size=4", "train.seq_len=16", "train.steps=2",
        "train.eval_every=0", "train.eval_batches=1", "train.warmup_steps=1", "data.n_pairs=2", "data.n_queries=2",
        "pos=rope"]


@pytest.mark.parametrize("window,sinks", [(None, None), (3, None), (None, torch.tensor([2.0, -1.0, 0.0, 0.5]))])
def test_first_token_mass_is_the_mean_probability_on_key_0(window, sinks):
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 4, 6, 8, generator=g), torch.randn(2, 2, 6, 8, generator=g)
    spec = MaskSpec(window=window)
    got = first_token_mass(q, k, spec, 8**-0.5, None, sinks=sinks)
    scores = torch.einsum("bhtd,bhsd->bhts", q, k.repeat_interleave(2, dim=1)) * 8**-0.5
    scores = scores.masked_fill(~allowed_mask(6, 6, spec, q.device), float("-inf"))
    denom = scores.exp().sum(-1) + (sinks.exp().view(1, 4, 1) if sinks is not None else 0)
    p0 = scores[..., 0].exp() / denom  # (B, H, T)
    rows = [t for t in range(1, 6) if window is None or t < window]  # queries >= 1 that can see key 0
    torch.testing.assert_close(got, p0[:, :, rows].mean(dim=(0, 2)), atol=1e-6, rtol=0)  # (H,)


def test_a_large_sink_logit_takes_the_mass_off_the_first_token():
    model = build_model(load_config([*TINY, "attn.sinks=true"]))
    idx = torch.randint(0, 64, (2, 12))
    before = first_token_attention(model, idx)
    with torch.no_grad():
        for b in model.blocks:
            b.attn.sinks.fill_(8.0)
    assert 0 < first_token_attention(model, idx) < before / 10
    assert not any(b.attn.record_first_token for b in model.blocks) and model.training  # left as found


def test_max_activation_and_mean_gate():
    model = build_model(load_config([*TINY, "attn.gate=headwise"])).eval()
    idx = torch.randint(0, 64, (2, 12))
    outs = []
    hooks = [b.register_forward_hook(lambda m, i, o: outs.append(o.abs().max())) for b in model.blocks]
    with torch.no_grad():
        model(idx)
    for h in hooks:
        h.remove()
    assert max_activation(model, idx) == pytest.approx(float(max(outs)))
    gate = mean_gate(model, idx)
    assert 0 < gate < 1 and not any(b.attn.gate.record for b in model.blocks)
    assert mean_gate(build_model(load_config(TINY)), idx) is None  # no gate, no figure


def test_training_results_record_the_probes(tmp_path):
    from attnbench.train.loop import run_train

    cfg = load_config([*FAST, "attn.gate=elementwise", "attn.sinks=true"])
    res = run_train(cfg, build_model(cfg), torch.device("cpu"), torch.float32, tmp_path, None)
    assert res["status"] == "ok"
    assert 0 < res["first_token_attn"] <= res["first_token_attn_max"] < 1
    assert res["max_activation"] > 0 and 0 < res["mean_gate"] < 1


def test_eval_window_evaluates_every_length_through_the_window_only():
    from attnbench.train.data import prepare_data

    cfg = load_config([*FAST, "train.eval_window=4", "train.eval_seq_lens=[32]"])
    model = build_model(cfg).eval()
    data = prepare_data(cfg)
    losses, _, _, _ = eval_lengths(model, data, cfg, torch.device("cpu"), torch.float32, known={"loss": -1.0, "acc": 0})
    windowed = build_model(load_config([*FAST, "attn.window=4"])).eval()
    windowed.load_state_dict(model.state_dict())
    for T in (16, 32):  # the known (dense) evaluation at train.seq_len is not reused
        want = evaluate(windowed, data.val_batches(1, 4, T), torch.device("cpu"), torch.float32)["loss"]
        assert losses[str(T)] == pytest.approx(want)
    assert all(b.attn.window is None for b in model.blocks)  # dense again afterwards
    assert losses["32"] != pytest.approx(evaluate(model, data.val_batches(1, 4, 32), torch.device("cpu"),
                                                  torch.float32)["loss"])


@pytest.mark.parametrize("overrides,message", [
    (["train.eval_window=0"], r"^train.eval_window=0: must be an integer >= 1$"),
    (["attn=mla", "train.eval_window=8"], r"^train.eval_window=8: attn=mla has no sliding window"),
])
def test_bad_eval_windows_are_rejected(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config([*FAST, *overrides])


def test_eval_window_asks_the_kernel_for_a_window():
    from attnbench.config.validate import kernel_requirements

    assert kernel_requirements(load_config([*FAST, "train.eval_window=8"]), "cpu").window
    assert not kernel_requirements(load_config(FAST), "cpu").window


@pytest.mark.slow
def test_gate_and_sinks_run_every_stage_and_reach_the_report(make_cfg, tmp_path):
    import json

    from attnbench import report
    from attnbench.job import run_job

    job = ("stages=[bench,train]", "logger=none", "bench=quick", "bench.memory=none", "bench.peak_flops=1e11",
           "bench.repeats=2", "bench.warmup=1", "bench.decode_tokens=3", "bench.seq_lens=[16,48]",
           "train.steps=6", "train.eval_every=3", "train.batch_size=4", "train.seq_len=48", "train.eval_batches=1",
           "model.d_model=32", "pos=rope")
    for i, extra in enumerate([("attn.gate=elementwise", "attn.sinks=true"), ("attn.gate=headwise", "attn.window=8")]):
        res = run_job(make_cfg(*job, *extra), tmp_path / str(i))
        on_disk = json.loads((tmp_path / str(i) / "results.json").read_text())
        assert res["status"] == "ok" and [r["status"] for r in on_disk["bench"]] == ["ok"] * 8, on_disk["bench"]
        assert on_disk["train"]["status"] == "ok" and on_disk["train"]["first_token_attn"] > 0
    csv = (report.build_report([tmp_path]).files["results.csv"]).read_text()
    assert "first_token_attn" in csv and "mean_gate" in csv
