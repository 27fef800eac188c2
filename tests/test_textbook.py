"""The textbook facts the project grew from (Raschka, Build a LLM from Scratch, ch. 3),
and the link between the textbook modules and attnbench's own attention."""
from __future__ import annotations

import torch

from attnbench.model.attention import AttnContext, CausalSelfAttention
from attnbench.model.kernels import MaskSpec, get_kernel
from textbook import CausalAttention, MultiHeadAttentionWrapper, SelfAttention_v1, SelfAttention_v2

# The book's running example: "Your journey starts with one step", 3-d embeddings.
INPUTS = torch.tensor([[0.43, 0.15, 0.89], [0.55, 0.87, 0.66], [0.57, 0.85, 0.64],
                       [0.22, 0.58, 0.33], [0.77, 0.25, 0.10], [0.05, 0.80, 0.55]])


def test_parameter_and_linear_self_attention_agree_after_transposed_transfer():
    torch.manual_seed(789)
    v2 = SelfAttention_v2(3, 2)
    v1 = SelfAttention_v1(3, 2)
    assert not torch.allclose(v1(INPUTS), v2(INPUTS))  # different random weights first
    with torch.no_grad():
        v1.W_query.copy_(v2.W_query.weight.T)  # nn.Linear stores (d_out, d_in)
        v1.W_key.copy_(v2.W_key.weight.T)
        v1.W_value.copy_(v2.W_value.weight.T)
    torch.testing.assert_close(v1(INPUTS), v2(INPUTS), atol=1e-6, rtol=1e-6)
    assert v1(INPUTS).shape == (6, 2)


def test_wrapper_with_two_heads_and_d_out_two_gives_2d_context_vectors():
    torch.manual_seed(123)
    batch = torch.stack([INPUTS, INPUTS])  # (2, 6, 3)
    mha = MultiHeadAttentionWrapper(d_in=3, d_out=2, context_length=6, dropout=0.0, num_heads=2)
    out = mha(batch)
    assert out.shape == (2, 6, 2)
    assert len(mha.heads) == 2 and all(h.W_query.out_features == 1 for h in mha.heads)


def test_causal_attention_first_token_sees_only_itself():
    ca = CausalAttention(3, 2, context_length=6).eval()
    out = ca(INPUTS[None])
    torch.testing.assert_close(out[0, 0], ca.W_value(INPUTS[0]))
    changed = INPUTS.clone()
    changed[3:] += 1.0
    torch.testing.assert_close(ca(changed[None])[0, :3], out[0, :3])


def test_gpt2_small_attention_has_2_360_064_parameters():
    """d=768, 12 heads, no qkv bias; output projection with bias: 768·2304 + 768·768 + 768."""
    attn = CausalSelfAttention(768, 12, 12, get_kernel("manual"), qkv_bias=False)
    assert sum(p.numel() for p in attn.parameters()) == 2_360_064


def test_wrapper_computes_what_attnbench_attention_computes_before_its_output_projection():
    """The textbook wrapper's heads are slices of attnbench's fused qkv projection."""
    torch.manual_seed(0)
    d, H, T = 16, 4, 7
    ours = CausalSelfAttention(d, H, H, get_kernel("manual")).eval()
    with torch.no_grad():
        ours.out.weight.copy_(torch.eye(d))
        ours.out.bias.zero_()
    book = MultiHeadAttentionWrapper(d, d, context_length=T, num_heads=H).eval()
    D = d // H
    wq, wk, wv = ours.qkv.weight.split(d, dim=0)  # (d, d) each, rows = head-major features
    with torch.no_grad():
        for h, head in enumerate(book.heads):
            rows = slice(h * D, (h + 1) * D)
            head.W_query.weight.copy_(wq[rows])
            head.W_key.weight.copy_(wk[rows])
            head.W_value.weight.copy_(wv[rows])
    x = torch.randn(2, T, d)
    got = ours(x, AttnContext(spec=MaskSpec()))
    torch.testing.assert_close(got, book(x), atol=1e-5, rtol=1e-5)
