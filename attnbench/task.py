"""`load_task`: the data of a composed config as a Python object, for checking data from Python."""
from __future__ import annotations

from omegaconf import DictConfig

from .train.checks import check_data
from .train.data import LMData, load_data


def load_task(cfg: DictConfig) -> LMData:
    """The task (dataset) of a composed config: `train_batch(step, batch_size, seq_len) -> (x, y)` and
    `val_batches(n_batches, batch_size, seq_len)`, both LongTensors (B, T), targets IGNORE (-100)
    where nothing is supervised. Bad data fields raise ConfigError with one line, as a run would.
    Text corpora are read (Tiny Shakespeare downloaded once) as a run reads them."""
    check_data(cfg)
    return load_data(cfg)
