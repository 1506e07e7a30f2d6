"""One H-Net stage: encoder -> router -> downsample -> inner network -> upsample -> decoder.

The inner network is another Stage, or at the innermost level a plain Stack. Widths may
grow inward: a learned (zero-initialised) vector pads the extra dimensions and the
stage output is sliced back.
"""
# pylint: disable=invalid-name
import jax
import jax.numpy as jnp
from flax import nnx

from hnet.config import ModelConfig
from hnet.model import chunking
from hnet.model.routers import make_router
from hnet.model.stack import Stack


def straight_through(c: jax.Array) -> jax.Array:
  """Forward 1, backward d/dc (H-Net's confidence STE)."""
  return c + jax.lax.stop_gradient(1.0 - c)


def symmetric_uniform(bound: float):
  """U(-bound, bound): PyTorch's nn.Linear bias init (nnx's `uniform(scale)` draws from [0, scale))."""
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


class Stage(nnx.Module):

  def __init__(self, cfg: ModelConfig, index: int, *, rngs: nnx.Rngs):
    st = cfg.stages[index]
    self.index = index
    self.is_innermost = st.is_innermost
    d_outer = cfg.stages[index - 1].d_model if index else st.d_model
    self.d_outer = d_outer
    self.pad_dimension = (nnx.Param(jnp.zeros((st.d_model - d_outer,), jnp.float32), out_sharding=("embed",))
                          if st.d_model > d_outer else None)
    if self.is_innermost:
      self.main = Stack(st.main, st, cfg, cfg.n_res(index, innermost_main=True), rngs=rngs)
      return
    n_res = cfg.n_res(index)
    self.capacity_of = lambda length: cfg.capacity(index, length)
    self.budget_of = lambda length: cfg.chunk_budget(index, length)
    self.encoder = Stack(st.encoder, st, cfg, n_res, rngs=rngs)
    self.router = make_router(cfg, st, rngs=rngs)
    self.residual_proj = nnx.Linear(
        st.d_model, st.d_model, kernel_init=nnx.with_partitioning(nnx.initializers.zeros, ("embed", "router")),
        bias_init=nnx.with_partitioning(symmetric_uniform(1 / st.d_model**0.5), ("router",)), rngs=rngs)
    self.inner = Stage(cfg, index + 1, rngs=rngs)
    self.decoder = Stack(st.decoder, st, cfg, n_res, rngs=rngs)

  def pad(self, x_BLD: jax.Array) -> jax.Array:
    """Float32 input widened to this stage's width by the learned pad vector."""
    x_BLD = x_BLD.astype(jnp.float32)
    if self.pad_dimension is None:
      return x_BLD
    pad_BLE = jnp.broadcast_to(self.pad_dimension[...], (*x_BLD.shape[:2], self.pad_dimension.shape[0]))
    return jnp.concatenate([x_BLD, pad_BLE], axis=-1)

  def route(self, x_BLD: jax.Array, segment_ids_BL: jax.Array, *, owner_ids_BL: jax.Array | None = None,
            tokens_BL: jax.Array | None = None, train: bool = False):
    """Pad, encoder, router and chunking of an outer stage: (h_BLD, positions_BL, routing, chunks)."""
    x_BLD = self.pad(x_BLD)
    positions_BL = chunking.positions_in_document(segment_ids_BL)
    with jax.named_scope("encoder"):
      h_BLD = self.encoder(x_BLD, segment_ids_BL, positions_BL)
    with jax.named_scope("router"):
      routing = self.router(h_BLD, tokens_BL=tokens_BL, segment_ids_BL=segment_ids_BL,
                            positions_BL=positions_BL, train=train)
    L = x_BLD.shape[1]
    with jax.named_scope("chunk_index"):
      if routing.key_bias_BL is not None:  # soft deletion keeps every position: no budget, only the read-out
        chunks = chunking.make_chunks(routing.boundary_BL, segment_ids_BL, L, lambda n: n)
      else:
        chunks = chunking.make_chunks(routing.boundary_BL, segment_ids_BL, self.capacity_of(L), self.budget_of,
                                      owner_ids_BL)
    return h_BLD, positions_BL, routing, chunks

  def __call__(self, x_BLD: jax.Array, segment_ids_BL: jax.Array, *, owner_ids_BL: jax.Array | None = None,
               positions_BL: jax.Array | None = None, tokens_BL: jax.Array | None = None,
               key_bias_BL: jax.Array | None = None, train: bool = False) -> tuple[jax.Array, list[dict]]:
    """Returns the stage output (width of the outer stage) and per-stage stats, outer -> inner.

    `owner_ids_BL` is the document layout from the outer stage's budgets (default: the segment ids);
    `positions_BL` overrides the innermost stage's RoPE positions (default: ordinals in the document).
    """
    if self.is_innermost:
      if positions_BL is None:
        positions_BL = chunking.positions_in_document(segment_ids_BL)
      with jax.named_scope("main"):
        y_BLD = self.main(self.pad(x_BLD), segment_ids_BL, positions_BL, key_bias_BL)
      return y_BLD[..., : self.d_outer], []

    h_BLD, positions_BL, routing, chunks = self.route(x_BLD, segment_ids_BL, owner_ids_BL=owner_ids_BL,
                                                      tokens_BL=tokens_BL, train=train)
    if routing.key_bias_BL is not None:  # MrT5 soft deletion: every position, biased keys
      z_BLD, inner_stats = self.inner(h_BLD, segment_ids_BL, positions_BL=positions_BL,
                                      key_bias_BL=routing.key_bias_BL, train=train)
      with jax.named_scope("dechunk"):  # the latest kept position's output; the gate's gradient a soft read's
        up_BLD = chunking.read_latest_kept(z_BLD, routing.prob_BL, chunks)
    else:
      with jax.named_scope("chunk_gather"):
        x_BMD = chunking.downsample(h_BLD, chunks)
      # MrT5 keeps the byte positions of the kept positions (RoPE); H-Net counts chunks.
      inner_positions_BM = (jnp.take_along_axis(positions_BL, chunks.start_BM, axis=1)
                            if self.router.keeps_positions else None)
      with jax.named_scope(f"stage{self.index + 1}"):
        z_BMD, inner_stats = self.inner(x_BMD, chunks.segment_ids_BM, owner_ids_BL=chunks.owner_BM,
                                        positions_BL=inner_positions_BM, train=train)
      with jax.named_scope("dechunk"):
        if self.router.smooths:
          prob_BM = jnp.take_along_axis(routing.prob_BL, chunks.start_BM, axis=1)
          z_BMD = chunking.smooth(z_BMD, prob_BM, chunks)
        up_BLD = chunking.upsample(z_BMD.astype(jnp.float32), chunks)

    with jax.named_scope("dechunk"):
      if self.router.smooths:
        confidence_BL = jnp.maximum(routing.prob_BL, 1.0 - routing.prob_BL)
        up_BLD = up_BLD * straight_through(confidence_BL)[..., None]
    with jax.named_scope("residual_proj"):
      res_BLD = self.residual_proj(h_BLD)  # float32 (params and input are float32)
    with jax.named_scope("decoder"):
      y_BLD = self.decoder(up_BLD + res_BLD, segment_ids_BL, positions_BL)

    valid = jnp.maximum(jnp.sum(segment_ids_BL > 0), 1).astype(jnp.float32)
    stats = {
        "router_loss": routing.loss,
        "boundary_frac": jnp.sum(chunks.boundary_BL) / valid,
        "overflow_frac": jnp.sum(chunks.overflow_B) / jnp.maximum(jnp.sum(chunks.proposed_B), 1.0),
        "row_overflow_frac": jnp.sum(chunks.row_overflow_B) / jnp.maximum(jnp.sum(chunks.proposed_B), 1.0),
        **routing.metrics,
    }
    return y_BLD[..., : self.d_outer], [stats, *inner_stats]
