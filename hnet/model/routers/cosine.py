"""H-Net dynamic chunking: boundary where adjacent projected states disagree (cosine)."""
# pylint: disable=invalid-name
import jax
import jax.numpy as jnp
from flax import nnx

from hnet.config import ModelConfig, StageConfig
from hnet.model.chunking import document_starts
from hnet.model.loss import ControllerState
from hnet.model.routers.base import Router, RouterOutput, register, valid_mean


def ratio_loss(boundary_frac: jax.Array, prob_mean: jax.Array, target_ratio: float) -> jax.Array:
  """H-Net load balancing N/(N-1) ((N-1) F G + (1-F)(1-G)); 1 at F = G = 1/N, no gradient through F."""
  n = target_ratio
  f = jax.lax.stop_gradient(boundary_frac)
  return n / (n - 1) * ((n - 1) * f * prob_mean + (1 - f) * (1 - prob_mean))


@register("cosine")
class CosineRouter(Router):
  """p_t = (1 - cos(W_q x_{t-1}, W_k x_t)) / 2; boundary iff p_t > 0.5; p = 1 at document starts.

  W_q, W_k start as the identity (H-Net), computed in float32. Dechunking smooths by p (H-Net's EMA
  and confidence straight-through); the ratio loss is weighted by opt.ratio_loss_weight.
  """
  smooths = True

  def __init__(self, d_model: int, *, target_ratio: float):
    eye = jnp.eye(d_model, dtype=jnp.float32)
    self.w_q = nnx.Param(eye, out_sharding=("embed", "router"))
    self.w_k = nnx.Param(eye, out_sharding=("embed", "router"))
    self.target_ratio = target_ratio

  @classmethod
  def build(cls, cfg: ModelConfig, st: StageConfig, *, rngs: nnx.Rngs) -> "CosineRouter":
    del cfg, rngs
    return cls(st.d_model, target_ratio=st.target_ratio)

  @classmethod
  def loss_weight(cls, ratio_loss_weight: float, controller: ControllerState) -> jax.Array:
    del controller
    return jnp.float32(ratio_loss_weight)

  @classmethod
  def flops_per_position(cls, cfg: ModelConfig, st: StageConfig) -> float:
    del cfg
    return 2 * 2 * st.d_model * st.d_model  # W_q and W_k

  def probability(self, prev_BLD: jax.Array, x_BLD: jax.Array) -> jax.Array:
    q_BLD = prev_BLD.astype(jnp.float32) @ self.w_q[...]
    k_BLD = x_BLD.astype(jnp.float32) @ self.w_k[...]
    cos_BL = jnp.sum(q_BLD * k_BLD, -1) * jax.lax.rsqrt(
        jnp.maximum(jnp.sum(q_BLD**2, -1) * jnp.sum(k_BLD**2, -1), 1e-12))
    return jnp.clip((1.0 - cos_BL) / 2.0, 0.0, 1.0)

  def __call__(self, x_BLD, *, tokens_BL, segment_ids_BL, positions_BL, train: bool) -> RouterOutput:
    del tokens_BL, positions_BL, train
    prev_BLD = jnp.pad(x_BLD[:, :-1], ((0, 0), (1, 0), (0, 0)))
    starts_BL = document_starts(segment_ids_BL)
    p_BL = jnp.where(starts_BL, 1.0, self.probability(prev_BLD, x_BLD))
    valid_BL = segment_ids_BL > 0
    boundary_BL = (p_BL > 0.5) & valid_BL
    f = valid_mean(boundary_BL, valid_BL)
    g = valid_mean(p_BL, valid_BL)
    loss = ratio_loss(f, g, self.target_ratio)
    return RouterOutput(boundary_BL, p_BL, loss, {"prob_mean": g})

  def init_decode(self, batch, d_model, lm):
    del lm
    return jnp.zeros((batch, d_model), jnp.float32)  # the previous position's encoder output

  def decode(self, h_BD, token_B, position_B, state, active_B, lm):
    del token_B, lm
    p_B = jnp.where(position_B == 0, 1.0, self.probability(state[:, None], h_BD[:, None])[:, 0])
    return p_B > 0.5, p_B, jnp.where(active_B[:, None], h_BD, state)
