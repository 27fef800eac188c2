"""The benchmark modes, in the order the suite runs and the report lists them."""
BENCH_MODES = ("forward", "train_step", "prefill", "decode")
