"""Standalone comparisons (not part of the installed package). Run from the repository root:

    python -m benchmarks.plain_gpt          attnbench's model vs a plain GPT with the same weights
    python -m benchmarks.harness_overhead   run_bench's timings vs torch.utils.benchmark
    python -m benchmarks.kernels            every attention kernel, and GQA/MQA decode
    python -m benchmarks.train_shakespeare  nanoGPT's shakespeare_char CPU recipe vs a plain trainer

Results and the machine they were measured on: docs/measurement.md and docs/training.md.
"""
