"""A scanned, rematerialised stack of pre-norm blocks: H-Net's "Isotropic" network.

Consecutive layers of one kind form a group whose weights are stacked on a leading
"layers" axis (vmapped constructor) and applied with `jax.lax.scan`, so compile time
and memory stay flat as depth grows.
"""
# pylint: disable=invalid-name
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from hnet import sharding
from hnet.config import LayerGroup, ModelConfig, StageConfig
from hnet.layers.attention import Attention, BlockMask, DocumentMask, layer_mask
from hnet.layers.mamba2 import Mamba2
from hnet.layers.mlp import SwiGLU
from hnet.layers.norm import RMSNorm

REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class Context(NamedTuple):
  """Per-sequence inputs every block of a stack sees."""
  segment_ids_BL: jax.Array  # document id per position, 0 = padding
  positions_BL: jax.Array  # position within the document (RoPE)
  mask: jax.Array | BlockMask | DocumentMask | None  # attention mask (`layer_mask`), None without attention
  key_bias_BL: jax.Array | None = None  # additive attention bias per key (MrT5 soft deletion)


class Block(nnx.Module):
  """Pre-norm residual block: x += mixer(norm(x)); x += mlp(norm(x)) when the kind has an MLP."""

  def __init__(self, group: LayerGroup, st: StageConfig, cfg: ModelConfig, n_res: int, *, rngs: nnx.Rngs):
    dtype = jnp.dtype(cfg.dtype)
    out_std = cfg.init_std / n_res ** 0.5
    self.norm1 = RMSNorm(st.d_model)
    if group.mixer == "mamba":
      self.mixer = Mamba2(
          st.d_model, d_state=cfg.ssm_d_state, expand=cfg.ssm_expand, head_dim=cfg.ssm_head_dim,
          d_conv=cfg.ssm_d_conv, chunk_size=cfg.ssm_chunk_size, ssd_impl=cfg.ssd_impl, init_std=cfg.init_std,
          out_init_std=out_std, dtype=dtype, rngs=rngs)
    else:
      self.mixer = Attention(
          st.d_model, st.num_heads, rotary_dim=st.rotary_dim, init_std=cfg.init_std,
          out_init_std=out_std, implementation=cfg.attention_impl, softmax1=cfg.softmax1, dtype=dtype, rngs=rngs)
    self.is_mamba = group.mixer == "mamba"
    self.stage = st.index
    if group.has_mlp:
      self.norm2 = RMSNorm(st.d_model)
      self.mlp = SwiGLU(st.d_model, st.d_ff, init_std=cfg.init_std, out_init_std=out_std, dtype=dtype,
                        rngs=rngs)
    else:
      self.norm2 = None
      self.mlp = None

  def __call__(self, x_BLD: jax.Array, ctx: Context) -> jax.Array:
    # Named scopes label the compiled program's ops (bench.step_overhead's per-component costs); they name
    # the stage because a rematerialised layer's backward ops lose the scopes outside the layer.
    with jax.named_scope(f"{'mamba2' if self.is_mamba else 'attention'}_stage{self.stage}"):
      h_BLD = self.norm1(x_BLD)
      if self.is_mamba:
        h_BLD = self.mixer(h_BLD, ctx.segment_ids_BL)
      else:
        h_BLD = self.mixer(h_BLD, ctx.positions_BL, ctx.mask, ctx.key_bias_BL)
      x_BLD = x_BLD + h_BLD.astype(jnp.float32)  # residual stream stays float32
    if self.mlp is not None:
      with jax.named_scope(f"mlp_stage{self.stage}"):
        x_BLD = x_BLD + self.mlp(self.norm2(x_BLD)).astype(jnp.float32)
    return x_BLD


class BlockGroup(nnx.Module):
  """`group.count` identical blocks, weights stacked on a leading "layers" axis."""

  def __init__(self, group: LayerGroup, st: StageConfig, cfg: ModelConfig, n_res: int, *, rngs: nnx.Rngs):
    @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make_block(r: nnx.Rngs) -> Block:
      return Block(group, st, cfg, n_res, rngs=r)

    self.blocks = make_block(rngs.split(group.count))
    self.remat = cfg.remat
    self.scan_layers = cfg.scan_layers

  def __call__(self, x_BLD: jax.Array, ctx: Context) -> jax.Array:
    def body(x, block):
      return block(x, ctx), None

    if self.remat != "none":
      body = jax.checkpoint(body, policy=REMAT_POLICIES[self.remat])
    # Unrolled, the same blocks run in the same order without a `while` loop (XLA's cost model skips loops).
    x_BLD, _ = jax.lax.scan(body, x_BLD, self.blocks, unroll=not self.scan_layers)
    return x_BLD


class Stack(nnx.Module):
  """Groups of blocks followed by a final RMSNorm; output float32."""

  def __init__(self, groups: tuple[LayerGroup, ...], st: StageConfig, cfg: ModelConfig, n_res: int,
               *, rngs: nnx.Rngs):
    if cfg.remat not in REMAT_POLICIES and cfg.remat != "none":
      raise ValueError(f"model.remat={cfg.remat!r}: use one of {['none', *REMAT_POLICIES]}")
    self.groups = nnx.List([BlockGroup(g, st, cfg, n_res, rngs=rngs) for g in groups])
    self.has_attention = any(g.mixer == "attention" for g in groups)
    self.window = st.window
    self.attention_impl = cfg.attention_impl
    self.norm = RMSNorm(st.d_model)

  def context(self, segment_ids_BL, positions_BL, key_bias_BL=None) -> Context:
    mask = None
    if self.has_attention:
      mask = layer_mask(segment_ids_BL, self.window, self.attention_impl)
    return Context(segment_ids_BL, positions_BL, mask, key_bias_BL)

  def __call__(self, x_BLD: jax.Array, segment_ids_BL: jax.Array, positions_BL: jax.Array,
               key_bias_BL: jax.Array | None = None) -> jax.Array:
    ctx = self.context(segment_ids_BL, positions_BL, key_bias_BL)
    x_BLD = sharding.constrain_batch(x_BLD.astype(jnp.float32))
    for group in self.groups:
      x_BLD = group(x_BLD, ctx)
    return self.norm(x_BLD)
