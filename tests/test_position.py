"""Positional schemes against their papers: RoPE (Su et al.), ALiBi (Press et al.),
sinusoidal (Vaswani et al.), learned (GPT-2) and NoPE."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from attnbench import build_model, load_config
from attnbench.model.position import ALiBi, Learned, NoPE, RoPE, Sinusoidal, alibi_slopes, apply_rotary

TINY = ["stages=[]", "device=cpu", "model.d_model=32", "attn.n_heads=4", "model.n_layers=2",
        "model.vocab_size=64", "model.context_length=16", "attn.impl=manual"]


# ----------------------------------------------------------------------------- RoPE
def rotated(x: torch.Tensor, positions: list[int], base: float = 10000.0) -> torch.Tensor:
    """x (1, 1, T, D) rotated at the given absolute positions."""
    rope = RoPE(d_model=4 * x.shape[-1], n_heads=4, context_length=0, base=base)
    return apply_rotary(x, rope.rotary(torch.tensor(positions)))


@pytest.mark.parametrize("shift", [1, 7, 100])
def test_rope_scores_depend_only_on_the_offset(shift):
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16, generator=g), torch.randn(1, 1, 1, 16, generator=g)
    for i, j in [(0, 0), (5, 2), (9, 0), (3, 3)]:
        at = (rotated(q, [i]) * rotated(k, [j])).sum()
        shifted = (rotated(q, [i + shift]) * rotated(k, [j + shift])).sum()
        torch.testing.assert_close(at, shifted, atol=1e-5, rtol=1e-5)
    # ... and they do depend on the offset
    assert not torch.allclose((rotated(q, [5]) * rotated(k, [2])).sum(), (rotated(q, [5]) * rotated(k, [4])).sum())


def test_rope_is_the_rotate_half_rotation():
    """Pair (x_i, x_{i+D/2}) is rotated by angle p * base^(-2i/D) (GPT-NeoX / LLaMA layout)."""
    D, p, base = 8, 3, 10000.0
    x = torch.randn(1, 1, 1, D)
    got = rotated(x, [p], base)[0, 0, 0]
    want = torch.empty(D)
    for i in range(D // 2):
        a, b, theta = x[0, 0, 0, i], x[0, 0, 0, i + D // 2], p * base ** (-2 * i / D)
        want[i] = a * math.cos(theta) - b * math.sin(theta)
        want[i + D // 2] = a * math.sin(theta) + b * math.cos(theta)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.norm(), x.norm(), atol=1e-5, rtol=1e-5)  # a rotation
    torch.testing.assert_close(rotated(x, [0])[0, 0, 0], x[0, 0, 0])  # position 0 is the identity


def test_rope_base_comes_from_the_config():
    model = build_model(load_config([*TINY, "pos=rope", "pos.base=500"]))
    head_dim = 8
    torch.testing.assert_close(model.pos.inv_freq, 500.0 ** (-torch.arange(0, head_dim, 2).float() / head_dim))


# ----------------------------------------------------------------------------- ALiBi
# Press et al. 2022, Section 3 and the authors' get_slopes(): for n a power of two the
# slopes are 2^(-8/n), 2^(-16/n), ...; otherwise the slopes of the closest lower power of
# two m, followed by every other slope of 2m (the odd ones), until n slopes.
SLOPES = {
    4: [2**-2, 2**-4, 2**-6, 2**-8],
    8: [1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32, 1 / 64, 1 / 128, 1 / 256],
    6: [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3],
    12: [2**-1, 2**-2, 2**-3, 2**-4, 2**-5, 2**-6, 2**-7, 2**-8, 2**-0.5, 2**-1.5, 2**-2.5, 2**-3.5],
}


@pytest.mark.parametrize("n_heads", sorted(SLOPES))
def test_alibi_slopes_are_the_papers(n_heads):
    torch.testing.assert_close(alibi_slopes(n_heads), torch.tensor(SLOPES[n_heads]), atol=0, rtol=1e-6)


def test_alibi_bias_is_minus_slope_times_distance():
    alibi = ALiBi(d_model=32, n_heads=8, context_length=0)
    bias = alibi.bias(torch.arange(3, 6), S=6)  # queries at 3..5 (after a cache of 3), keys 0..5
    assert bias.shape == (8, 3, 6)  # (H, T, S)
    for h, slope in enumerate(SLOPES[8]):
        for i, qpos in enumerate(range(3, 6)):
            for j in range(qpos + 1):
                assert bias[h, i, j].item() == pytest.approx(-slope * (qpos - j))


# ----------------------------------------------------------------------------- absolute
def test_sinusoidal_matches_the_formula():
    """PE(p, 2i) = sin(p / 10000^(2i/d)), PE(p, 2i+1) = cos(p / 10000^(2i/d))."""
    d = 6
    sin = Sinusoidal(d_model=d, n_heads=1, context_length=0)
    x = torch.zeros(1, 5, d)
    pe = sin.embed(x, torch.arange(100, 105))[0]  # positions past any context length are fine
    for p in range(5):
        for i in range(d // 2):
            angle = (100 + p) / 10000 ** (2 * i / d)
            assert pe[p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-5)
            assert pe[p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-5)


def test_sinusoidal_and_rope_run_past_context_length():
    for pos in ("sinusoidal", "rope", "alibi", "none"):
        model = build_model(load_config([*TINY, f"pos={pos}"]))
        with torch.no_grad():
            assert model(torch.zeros(1, 40, dtype=torch.long)).shape == (1, 40, 64)


def test_learned_adds_a_table_row_per_position():
    learned = Learned(d_model=4, n_heads=1, context_length=8)
    x = torch.zeros(1, 3, 4)
    torch.testing.assert_close(learned.embed(x, torch.arange(2, 5))[0], learned.wpe.weight[2:5])


def test_learned_past_context_length_is_a_clear_error():
    model = build_model(load_config([*TINY, "pos=learned"]))  # context_length=16
    with torch.no_grad():
        model(torch.zeros(1, 16, dtype=torch.long))  # exactly the context is fine
        with pytest.raises(ValueError, match=r"^sequence length 17 > model.context_length=16 with pos=learned$"):
            model(torch.zeros(1, 17, dtype=torch.long))
        cache = model.init_cache(batch_size=1, max_len=16)
        model(torch.zeros(1, 16, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="max_len=17 > model.context_length=16 with pos=learned"):
        model.init_cache(batch_size=1, max_len=17)


def test_nope_changes_nothing():
    x = torch.randn(2, 3, 8)
    nope = NoPE(d_model=8, n_heads=2, context_length=4)
    assert nope.embed(x, torch.arange(3)) is x
    assert nope.rotary(torch.arange(3)) is None and nope.bias(torch.arange(3), 3) is None
    assert sum(p.numel() for p in nope.parameters()) == 0


# ----------------------------------------------------------------------------- scale at init
PRESETS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "model").glob("*.yaml"))


class _Seen(Exception):
    pass


def first_block_input(model, idx: torch.Tensor) -> torch.Tensor:
    """What GPT.forward hands to its first block, captured there; the rest of the forward
    (up to a 50257-way LM head) is skipped."""
    seen = {}

    def grab(module, args):
        seen["x"] = args[0]
        raise _Seen

    hook = model.blocks[0].register_forward_pre_hook(grab)
    try:
        with torch.no_grad(), pytest.raises(_Seen):
            model(idx)
    finally:
        hook.remove()
    return seen["x"]  # (B, T, C)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("pos", ["learned", "sinusoidal"])
def test_positions_do_not_drown_the_tokens_at_init(preset, pos):
    """Issue 10.1: RMS(what the scheme adds to the first block's input) <= 3 × RMS(the token part),
    for every model preset. Unscaled sinusoids (RMS 0.707) against N(0, 0.02) embeddings were 35×."""
    # Neither the depth nor the vocabulary size changes these RMS (the init std and the width do):
    # one layer and 256 tokens keep the big presets cheap to build.
    cfg = load_config(["stages=[]", f"model={preset}", f"pos={pos}", "model.n_layers=1", "model.vocab_size=256"])
    model = build_model(cfg).eval()
    T = min(128, cfg.model.context_length)
    idx = torch.randint(0, cfg.model.vocab_size, (2, T))
    x = first_block_input(model, idx)
    with torch.no_grad():
        added = model.pos.embed(torch.zeros_like(x), torch.arange(T))  # (B, T, C): the positional part
    token = x - added
    rms = lambda t: t.pow(2).mean().sqrt().item()  # noqa: E731
    assert rms(added) <= 3 * rms(token), (preset, pos, rms(added), rms(token))
    assert rms(token) > 0


def test_rotary_bias_and_none_add_nothing_to_the_block_input():
    for pos in ("rope", "alibi", "none"):
        model = build_model(load_config([*TINY, f"pos={pos}"])).eval()
        idx = torch.randint(0, 64, (1, 8))
        torch.testing.assert_close(first_block_input(model, idx), model.wte(idx), rtol=0, atol=0)


def test_sinusoidal_scales_the_tokens_by_sqrt_d_model():
    """Vaswani et al. Sec. 3.4: embeddings × sqrt(d_model), then the table is added."""
    sin = Sinusoidal(d_model=16, n_heads=1, context_length=0)
    x = torch.randn(2, 5, 16)
    zero = sin.embed(torch.zeros_like(x), torch.arange(5))
    torch.testing.assert_close(sin.embed(x, torch.arange(5)), x * 4.0 + zero)
