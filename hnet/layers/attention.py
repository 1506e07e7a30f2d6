"""Causal multi-head attention through `jax.nn.dot_product_attention`, with RoPE and document masks."""
# pylint: disable=invalid-name
import jax
import jax.numpy as jnp
from flax import nnx

from hnet.layers.rope import apply_rope


def attention_mask(segment_ids_BL: jax.Array, window: int = -1) -> jax.Array:
  """Boolean (B, 1, L, L) mask: causal, same document, and within `window` keys back (-1 = all).

  Padding (segment 0) attends to padding, so no query row is fully masked.
  """
  L = segment_ids_BL.shape[1]
  q_L1 = jnp.arange(L)[:, None]
  k_1L = jnp.arange(L)[None, :]
  allowed_LL = k_1L <= q_L1
  if window >= 0:
    allowed_LL &= q_L1 - k_1L <= window
  same_doc_BLL = segment_ids_BL[:, :, None] == segment_ids_BL[:, None, :]
  return (same_doc_BLL & allowed_LL[None])[:, None]


class Attention(nnx.Module):
  """Fused QKV projection, RoPE on the first `rotary_dim` dims, causal softmax attention."""

  def __init__(self, d_model: int, num_heads: int, *, rotary_dim: int, init_std: float,
               out_init_std: float, implementation: str = "default", dtype=jnp.float32, rngs: nnx.Rngs):
    self.num_heads = num_heads
    self.head_dim = d_model // num_heads
    self.rotary_dim = rotary_dim
    self.implementation = None if implementation == "default" else implementation
    self.dtype = dtype
    self.wqkv = nnx.Linear(
        d_model, 3 * d_model, use_bias=False, dtype=dtype,
        kernel_init=nnx.with_partitioning(nnx.initializers.normal(init_std), ("embed", "heads")), rngs=rngs)
    self.out_proj = nnx.Linear(
        d_model, d_model, use_bias=False, dtype=dtype,
        kernel_init=nnx.with_partitioning(nnx.initializers.normal(out_init_std), ("heads", "embed")),
        rngs=rngs)

  def qkv(self, x_BLD: jax.Array, positions_BL: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Projects and rotates: q, k, v each (B, L, H, K)."""
    B, L, _ = x_BLD.shape
    qkv_BL3HK = self.wqkv(x_BLD.astype(self.dtype)).reshape(B, L, 3, self.num_heads, self.head_dim)
    q_BLHK, k_BLHK, v_BLHK = qkv_BL3HK[:, :, 0], qkv_BL3HK[:, :, 1], qkv_BL3HK[:, :, 2]
    q_BLHK = apply_rope(q_BLHK, positions_BL, self.rotary_dim)
    k_BLHK = apply_rope(k_BLHK, positions_BL, self.rotary_dim)
    return q_BLHK, k_BLHK, v_BLHK

  def __call__(self, x_BLD: jax.Array, positions_BL: jax.Array, mask_B1LL: jax.Array,
               key_bias_BL: jax.Array | None = None) -> jax.Array:
    """`key_bias_BL` is added to every query's score for that key (MrT5 soft deletion)."""
    B, L, D = x_BLD.shape
    q_BLHK, k_BLHK, v_BLHK = self.qkv(x_BLD, positions_BL)
    bias = None if key_bias_BL is None else key_bias_BL[:, None, None, :].astype(self.dtype)
    out_BLHK = jax.nn.dot_product_attention(
        q_BLHK, k_BLHK, v_BLHK, bias=bias, mask=mask_B1LL, implementation=self.implementation)
    return self.out_proj(out_BLHK.reshape(B, L, D))
