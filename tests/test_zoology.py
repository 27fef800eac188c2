"""experiment=zoology: the preset's grid and knobs, and the report's MQAR figures (recall vs pairs, vs state bytes)."""
from __future__ import annotations

import json

import pytest

from attnbench.report.runs import load_run
from conftest import ROOT
from attnbench.report.zoology import FILES, cell_points, state_bytes


def test_preset_grid_and_knobs(make_cfg):
    cfg = make_cfg("experiment=zoology", "attn=linear", "attn.short_conv=4")
    assert cfg.data.name == "mqar" and cfg.ffn.name == "none" and cfg.attn.n_heads == 1 and cfg.model.n_layers == 2
    assert cfg.attn.name == "linear" and cfg.attn.short_conv == 4 and cfg.pos.name == "learned"
    from omegaconf import OmegaConf

    text = (ROOT / "conf" / "experiment" / "zoology.yaml").read_text()
    params = OmegaConf.create(text)["hydra"]["sweeper"]["params"]
    assert set(params) == {"model.d_model", "data.n_pairs", "train.lr", "seed"}
    assert "vocab_size=8192" in text and "model.d_model=64,128,256,512" in text, "the GPU command stays in the comment"
    # issue 26's CPU recipe (the pilots): vocab 256, T 64, 20,000 examples, widths 16-64, lr around 1e-2
    assert (cfg.data.vocab_size, cfg.train.seq_len, cfg.data.train_examples, cfg.train.steps) == (256, 64, 20000, 1000)
    assert (params["model.d_model"], params["train.lr"]) == ("16,32,64", "3e-3,1e-2,3e-2")
    assert make_cfg("experiment=zoology", "attn=mha", "attn.short_conv=3").attn.short_conv == 3, "attention has its conv too"
    assert "attn=mha attn.short_conv=3" in text
    for knob in ("data.train_pairs=[4,8]", "data.train_examples=1000", "train.batch_size=128"):
        make_cfg("experiment=zoology", knob)  # the recipe's knobs are fields


def _run(root, i, attn, d, p, lr, seed, acc, kv=0, state=0):
    run = root / str(i)
    (run / ".hydra").mkdir(parents=True)
    over = ["attn=linear", "attn.short_conv=4"] if attn == "linear" else []
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in over))
    res = {"status": "ok", "variant": f"{attn}-learned-layernorm-none-L2-D{d}",
           "config": {"seed": seed, "attn": {"name": attn}, "data": {"name": "mqar", "n_pairs": p},
                      "model": {"d_model": d}, "train": {"lr": lr, "seq_len": 64}},
           "model": {"kv_cache_bytes_per_token": kv, "recurrent_state_bytes": state},
           "train": {"status": "ok", "metric_name": "recall_acc", "metric": acc}}
    (run / "results.json").write_text(json.dumps(res))
    return run


def test_cells_choose_lr_on_tuning_seeds_and_report_held_out(tmp_path):
    rows = []
    i = 0
    for d in (32, 64):
        for p in (4, 8):
            for lr, acc in ((1e-3, 0.5), (3e-3, 0.8)):
                for seed in (0, 1):
                    rows.append(_run(tmp_path, i, "mha", d, p, lr, seed, acc, kv=2 * 2 * d * 4))
                    i += 1
            for seed, acc in ((2, 0.9), (3, 0.7)):  # held-out seeds at the chosen lr
                rows.append(_run(tmp_path, i, "mha", d, p, 3e-3, seed, acc, kv=2 * 2 * d * 4))
                i += 1
            rows.append(_run(tmp_path, i, "linear", d, p, 1e-2, 0, 0.3 if d == 32 else 0.6, state=2 * d * d * 4))
            i += 1
    runs = [load_run(r) for r in rows]
    points, held = cell_points(runs)
    assert not held  # linear has no held-out seeds
    mean, ci, state = points[("mha", 32, 4)]
    assert mean == pytest.approx(0.8) and ci > 0 and state == 2 * 2 * 32 * 4 * 64
    assert points[("attn=linear attn.short_conv=4", 64, 8)][::2] == (0.6, 2 * 64 * 64 * 4)
    assert state_bytes(runs[0]) == 2 * 2 * 32 * 4 * 64

    from attnbench.report import build_report

    rep = build_report([tmp_path], tmp_path / "report")
    for name in FILES:
        assert rep.files[name].stat().st_size > 0
    md = rep.files["report.md"].read_text()
    assert "## MQAR recall" in md and "mqar_recall_vs_state.png" in md
