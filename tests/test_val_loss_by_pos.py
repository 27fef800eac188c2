"""val_loss_by_pos: the validation loss in buckets of positions, in results.json, W&B's summary and the report."""
from __future__ import annotations

import json
import math

import pytest
import torch

from attnbench.job import run_job
from attnbench.track.wandb_sink import summary_figures
from attnbench.train.evaluate import bucket_losses

pytestmark = pytest.mark.usefixtures("one_thread")


def test_buckets_written_out():
    loss = torch.tensor([1.0, 3.0, 2.0, 2.0, 0.0, 4.0, 5.0, 5.0], dtype=torch.float64)
    count = torch.tensor([1, 1, 2, 0, 0, 0, 1, 3])
    assert bucket_losses(loss, count, 4) == {"0": 2.0, "2": 2.0, "4": None, "6": 2.5}
    assert bucket_losses(loss[:5], count[:5], 2) == {"0": 4.0 / 2, "2": 4.0 / 2}  # edges 0, 2, 5
    assert list(bucket_losses(loss[:3], count[:3], 8)) == ["0", "1", "2"]  # at most one bucket per position


@pytest.fixture
def text_file(tmp_path):
    f = tmp_path / "corpus.txt"
    f.write_text("".join(f"the {a} cat sat on the {b} mat.\n" for a in ("black", "white") for b in ("red", "blue")) * 60)
    return f


def test_results_wandb_and_report_have_it(make_cfg, tmp_path, text_file):
    cfg = make_cfg("stages=[train]", "logger=none", "device=cpu", "data=text", f"data.path={text_file}", "pos=rope",
                   "train.seq_len=32", "train.eval_seq_lens=[64]", "train.batch_size=4", "train.steps=6",
                   "train.eval_every=3", "train.eval_batches=2", "train.pos_buckets=4")
    res = run_job(cfg, tmp_path / "run")
    tr = res["train"]
    assert set(tr["val_loss_by_pos"]) == {"32", "64"}
    assert list(tr["val_loss_by_pos"]["64"]) == ["0", "16", "32", "48"]
    for T, buckets in tr["val_loss_by_pos"].items():  # text: every position supervised, equal counts
        assert math.isclose(sum(buckets.values()) / 4, tr["val_loss_by_len"][T], rel_tol=1e-5)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())["train"]["val_loss_by_pos"]
    assert saved == tr["val_loss_by_pos"]
    keys = summary_figures(res)
    assert keys["train/val_loss_by_pos/64/48"] == tr["val_loss_by_pos"]["64"]["48"]

    from attnbench.report import build_report

    rep = build_report([tmp_path / "run"], tmp_path / "report")
    assert rep.images["by_position"].name == "val_loss_by_pos.png" and rep.images["by_position"].stat().st_size > 0
    assert "## Validation loss by position" in rep.files["report.md"].read_text()


def test_recall_buckets_without_answers_are_null(make_cfg, tmp_path):
    cfg = make_cfg("stages=[train]", "logger=none", "device=cpu", "train.seq_len=32", "data.n_queries=4",
                   "train.batch_size=4", "train.steps=2", "train.eval_every=0", "train.eval_batches=1")
    by_pos = run_job(cfg, tmp_path)["train"]["val_loss_by_pos"]["32"]
    assert list(by_pos) == [str(4 * i) for i in range(8)]
    assert by_pos["0"] is None and by_pos["28"] is not None  # the queries are the last 8 tokens


def test_off_with_zero_buckets(make_cfg, tmp_path):
    cfg = make_cfg("stages=[train]", "logger=none", "device=cpu", "train.seq_len=32", "data.n_queries=4",
                   "train.batch_size=4", "train.steps=2", "train.eval_every=0", "train.eval_batches=1",
                   "train.pos_buckets=0")
    assert run_job(cfg, tmp_path)["train"]["val_loss_by_pos"] == {}


def test_logged_to_the_wandb_run(make_cfg, tmp_path):
    from attnbench.track.wandb_reader import read_run

    cfg = make_cfg("stages=[train]", "device=cpu", "train.seq_len=16", "data.n_pairs=2", "data.n_queries=2",
                   "train.batch_size=2", "train.steps=2", "train.eval_every=0", "train.eval_batches=1",
                   "train.pos_buckets=2")
    res = run_job(cfg, tmp_path)
    by_pos = res["train"]["val_loss_by_pos"]["16"]
    assert by_pos["0"] is None and by_pos["8"] is not None  # the 2 queries are in the last 4 tokens
    assert read_run(tmp_path).summary["train/val_loss_by_pos/16/8"] == pytest.approx(by_pos["8"])
