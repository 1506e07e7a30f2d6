"""Causal multi-head attention with RoPE and document masks: `jax.nn.dot_product_attention` or splash.

A short sliding window (the encoder/decoder's local attention) is computed on blocks: S
queries against the 2S keys of their own block and the one before, which hold every key a
query may see when window < S. That costs O(L·S) instead of the O(L²) of a masked full
score matrix, the difference between a cheap and the dominant layer at L in the thousands.

`implementation` ('auto', 'splash', 'default', 'cudnn', 'xla'; `model.attention_impl`): the last
three are `jax.nn.dot_product_attention`'s, with the mask built once per stack. 'splash' runs
`hnet.kernels.splash` (Mosaic on TPU, Pallas interpret mode elsewhere: tests only); 'auto' picks
splash on TPU, cuDNN on GPU and XLA on CPU. Both choose when the program is lowered
(`jax.lax.platform_dependent`), so a TPU program compiled on a CPU host gets the TPU kernel. They
receive a `DocumentMask` (segment ids and window) and build the dense mask per layer only where
they run XLA: splash's unsupported cases (`splash.unsupported`), cuDNN's refusals, CPU.
"""
# pylint: disable=invalid-name
import functools
import logging
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from hnet.config import ATTENTION_IMPLS
from hnet.kernels import splash
from hnet.layers.rope import apply_rope

_DOT_PRODUCT_IMPL = {"default": None, "cudnn": "cudnn", "xla": "xla", "auto": None, "splash": None}


class BlockMask(NamedTuple):
  """Sliding-window mask in block form: (B * nb, 1, S, 2S) for nb = ceil(L / S) blocks of S queries."""
  mask_N1ST: jax.Array


class DocumentMask(NamedTuple):
  """The mask's ingredients, for 'auto'/'splash': the kernel reads them, an XLA fallback expands them."""
  segment_ids_BL: jax.Array
  window: int = -1


def window_block_size(window: int, length: int) -> int:
  """Query block S for blocked sliding-window attention, or 0 where the full (L, L) form is as cheap."""
  if window < 0:
    return 0
  block = -(-(window + 1) // 8) * 8  # S > window: a query's keys lie in its block and the previous one
  return block if 4 * block <= length else 0


def attention_mask(segment_ids_BL: jax.Array, window: int = -1) -> jax.Array | BlockMask:
  """Causal, same-document mask, within `window` keys back (-1 = all).

  A (B, 1, L, L) boolean array, or a `BlockMask` where the window is short enough for the
  blocked form. Padding (segment 0) attends to padding, so no query row is fully masked.
  """
  L = segment_ids_BL.shape[1]
  block = window_block_size(window, L)
  if block:
    return _block_mask(segment_ids_BL, window, block)
  q_L1 = jnp.arange(L)[:, None]
  k_1L = jnp.arange(L)[None, :]
  allowed_LL = k_1L <= q_L1
  if window >= 0:
    allowed_LL &= q_L1 - k_1L <= window
  same_doc_BLL = segment_ids_BL[:, :, None] == segment_ids_BL[:, None, :]
  return (same_doc_BLL & allowed_LL[None])[:, None]


def layer_mask(segment_ids_BL: jax.Array, window: int, implementation: str
               ) -> jax.Array | BlockMask | DocumentMask:
  """What a stack hands its attention layers: `attention_mask` for the XLA implementations, built once;
  a `DocumentMask` for 'auto'/'splash', whose dense form would be dead weight in a TPU program."""
  if implementation in ("auto", "splash"):
    return DocumentMask(segment_ids_BL, window)
  return attention_mask(segment_ids_BL, window)


def dense_attention(q_BLHK: jax.Array, k_BLHK: jax.Array, v_BLHK: jax.Array, mask_B1LL: jax.Array,
                    bias_B11L: jax.Array | None = None, implementation: str | None = None) -> jax.Array:
  """Causal attention under a dense (B, 1, L, L) mask from `attention_mask` (causality included).

  cuDNN is also told the mask is causal: given only the mask, it applies it as a bias over the whole
  (L, L) square; with `is_causal` it skips the blocks above the diagonal. The result is the same.
  """
  return jax.nn.dot_product_attention(q_BLHK, k_BLHK, v_BLHK, bias=bias_B11L, mask=mask_B1LL,
                                      is_causal=implementation == "cudnn", implementation=implementation)


def with_null_key(k_BTHK: jax.Array, v_BTHK: jax.Array, mask_B1ST: jax.Array, bias_B11T: jax.Array | None):
  """softmax₁ (MrT5's released model) as one more key that every query sees, with score 0 and value 0:
  softmax over the keys and it is exp(s) / (1 + Σ exp(s)), so a query may attend to nothing."""
  zeros_B1HK = jnp.zeros_like(k_BTHK[:, :1])
  k_BTHK = jnp.concatenate([k_BTHK, zeros_B1HK], axis=1)
  v_BTHK = jnp.concatenate([v_BTHK, zeros_B1HK], axis=1)
  mask_B1ST = jnp.concatenate([mask_B1ST, jnp.ones((*mask_B1ST.shape[:-1], 1), bool)], axis=-1)
  if bias_B11T is not None:
    bias_B11T = jnp.concatenate([bias_B11T, jnp.zeros((*bias_B11T.shape[:-1], 1), bias_B11T.dtype)], axis=-1)
  return k_BTHK, v_BTHK, mask_B1ST, bias_B11T


def _to_blocks(x_BL: jax.Array, block: int, fill=0) -> jax.Array:
  """(B, L, ...) -> (B, nb, S, ...), the tail padded with `fill`."""
  B, L = x_BL.shape[:2]
  nb = -(-L // block)
  x_BL = jnp.pad(x_BL, [(0, 0), (0, nb * block - L)] + [(0, 0)] * (x_BL.ndim - 2), constant_values=fill)
  return x_BL.reshape(B, nb, block, *x_BL.shape[2:])


def _with_previous(x_BNS: jax.Array, fill=0) -> jax.Array:
  """(B, nb, S, ...) -> (B, nb, 2S, ...): each block preceded by the block before it (`fill` for the first)."""
  prev_BNS = jnp.pad(x_BNS[:, :-1], [(0, 0), (1, 0)] + [(0, 0)] * (x_BNS.ndim - 2), constant_values=fill)
  return jnp.concatenate([prev_BNS, x_BNS], axis=2)


def _block_mask(segment_ids_BL: jax.Array, window: int, block: int) -> BlockMask:
  seg_q_BNS = _to_blocks(segment_ids_BL, block)
  seg_k_BNT = _with_previous(seg_q_BNS, fill=-1)
  B, nb = seg_q_BNS.shape[:2]
  q_NS1 = (jnp.arange(nb)[:, None] * block + jnp.arange(block)[None, :])[:, :, None]
  k_N1T = ((jnp.arange(nb)[:, None] - 1) * block + jnp.arange(2 * block)[None, :])[:, None, :]
  allowed_NST = (k_N1T <= q_NS1) & (q_NS1 - k_N1T <= window) & (k_N1T >= 0)
  mask_BNST = (seg_q_BNS[..., :, None] == seg_k_BNT[..., None, :]) & allowed_NST[None]
  return BlockMask(mask_BNST.reshape(B * nb, 1, block, 2 * block))


def _auto_level() -> int:
  """What 'auto' chose for accelerators is news on an accelerator host, noise on a CPU one
  (`train.py --aot` lists the kernels a program holds in its report)."""
  return logging.DEBUG if jax.default_backend() == "cpu" else logging.INFO


class Attention(nnx.Module):
  """Fused QKV projection, RoPE on the first `rotary_dim` dims, causal softmax attention."""

  def __init__(self, d_model: int, num_heads: int, *, rotary_dim: int, init_std: float,
               out_init_std: float, implementation: str = "default", softmax1: bool = False, dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.num_heads = num_heads
    self.softmax1 = softmax1
    self.head_dim = d_model // num_heads
    self.rotary_dim = rotary_dim
    if implementation not in ATTENTION_IMPLS:
      raise ValueError(f"Attention: implementation={implementation!r}; use one of {ATTENTION_IMPLS}")
    self.implementation = implementation
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

  def __call__(self, x_BLD: jax.Array, positions_BL: jax.Array, mask: jax.Array | BlockMask | DocumentMask,
               key_bias_BL: jax.Array | None = None) -> jax.Array:
    """`mask` from `layer_mask`; `key_bias_BL` is added to every query's score for that key (MrT5)."""
    B, L, D = x_BLD.shape
    q_BLHK, k_BLHK, v_BLHK = self.qkv(x_BLD, positions_BL)
    if isinstance(mask, DocumentMask):
      out_BLHK = self._by_platform(q_BLHK, k_BLHK, v_BLHK, mask, key_bias_BL)
    else:
      out_BLHK = self._dot_product(q_BLHK, k_BLHK, v_BLHK, mask, key_bias_BL,
                                   _DOT_PRODUCT_IMPL[self.implementation])
    return self.out_proj(out_BLHK.reshape(B, L, D))

  def _dot_product(self, q_BLHK, k_BLHK, v_BLHK, mask, key_bias_BL, implementation):
    """`jax.nn.dot_product_attention` with a dense or blocked mask."""
    if isinstance(mask, BlockMask):
      return self._blocked(q_BLHK, k_BLHK, v_BLHK, mask.mask_N1ST, key_bias_BL, implementation)
    bias_B11L = None if key_bias_BL is None else key_bias_BL[:, None, None, :].astype(self.dtype)
    if self.softmax1:
      k_BLHK, v_BLHK, mask, bias_B11L = with_null_key(k_BLHK, v_BLHK, jnp.broadcast_to(mask, (
          q_BLHK.shape[0], 1, *mask.shape[2:])), bias_B11L)
    return dense_attention(q_BLHK, k_BLHK, v_BLHK, mask, bias_B11L, implementation)

  def _by_platform(self, q_BLHK, k_BLHK, v_BLHK, mask: DocumentMask, key_bias_BL):
    """'splash' / 'auto': the kernel chosen for the platform the program is lowered for."""
    window = mask.window

    def xla(q, k, v, seg, implementation="xla"):
      return self._dot_product(q, k, v, attention_mask(seg, window), key_bias_BL, implementation)

    def cudnn(q, k, v, seg):
      try:
        return xla(q, k, v, seg, "cudnn")
      except (RuntimeError, ValueError, NotImplementedError) as e:  # checked at trace time: float32, no GPU
        why = (str(e).splitlines() or [type(e).__name__])[0][:200]
        splash.log_once(_auto_level(), f"attention_impl='auto': the GPU branch runs XLA, cuDNN declined: {why}")
        return xla(q, k, v, seg)

    args = (q_BLHK, k_BLHK, v_BLHK, mask.segment_ids_BL)
    kernel = functools.partial(splash.splash_attention, window=window)
    reason = splash.unsupported(q_BLHK.shape[1], key_bias_BL is not None) or (
        "softmax1 (a null key)" if self.softmax1 else None)
    if reason:  # a warning where splash was asked for; 'auto' on TPU just says what it chose
      level = logging.WARNING if self.implementation == "splash" else _auto_level()
      splash.log_once(level, f"attention_impl={self.implementation!r}: XLA instead of splash: {reason}")
      kernel = xla
    if self.implementation == "splash":
      if reason:
        return xla(*args)
      return jax.lax.platform_dependent(*args, tpu=kernel, default=functools.partial(kernel, interpret=True))
    return jax.lax.platform_dependent(*args, tpu=kernel, cuda=cudnn, default=xla)

  def _blocked(self, q_BLHK, k_BLHK, v_BLHK, mask_N1ST, key_bias_BL, implementation):
    """Each block of S queries attends to the 2S keys of its block and the previous one."""
    B, L, H, K = q_BLHK.shape
    S = mask_N1ST.shape[2]
    q_NSHK = _to_blocks(q_BLHK, S).reshape(-1, S, H, K)
    k_NTHK, v_NTHK = (_with_previous(_to_blocks(x, S)).reshape(-1, 2 * S, H, K) for x in (k_BLHK, v_BLHK))
    bias = None
    if key_bias_BL is not None:
      bias = _with_previous(_to_blocks(key_bias_BL, S)).reshape(-1, 1, 1, 2 * S).astype(self.dtype)
    if self.softmax1:
      k_NTHK, v_NTHK, mask_N1ST, bias = with_null_key(k_NTHK, v_NTHK, mask_N1ST, bias)
    out_NSHK = jax.nn.dot_product_attention(
        q_NSHK, k_NTHK, v_NTHK, bias=bias, mask=mask_N1ST, implementation=implementation)
    return out_NSHK.reshape(B, -1, H, K)[:, :L]
