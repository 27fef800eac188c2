"""The benchmark modes, in the order the suite runs and the report lists them (the one list:
config validation, the suite, the report tables and plots read it). A new mode is a name here
and its statement builder in steps.py (BUILDERS)."""
BENCH_MODES = ("forward", "train_step", "prefill", "decode")
# Plot titles; a mode without one is titled by its name.
MODE_TITLES = {"forward": "forward", "train_step": "train step (fwd + bwd + AdamW)",
               "prefill": "prefill", "decode": "decode (per new token)"}
