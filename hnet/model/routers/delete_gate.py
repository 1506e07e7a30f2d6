"""MrT5-style delete gate adapted to a causal hierarchy.

G_t = k * sigmoid(-(w . LN(x_t) + b)) in (k, 0); a position is kept (starts a chunk)
iff G_t > k/2. Training uses soft deletion: every position reaches the inner network
and G is added to the inner attention scores per key; inference keeps only the kept
positions (hard deletion, capacity-padded). The regulariser is mean(G); its weight comes
from MrT5's PI controller (state outside the parameters, `hnet/model/loss.py`), driven toward
deleting 1 - 1/N of the positions. The inner stage keeps the kept bytes' RoPE positions.
"""
# pylint: disable=invalid-name
import jax
import jax.numpy as jnp
from flax import nnx

from hnet.config import ModelConfig, StageConfig
from hnet.layers.norm import RMSNorm
from hnet.model.chunking import document_starts
from hnet.model.loss import ControllerState, update_controller
from hnet.model.routers.base import Router, RouterOutput, register, rule_decision, valid_mean


@register("delete_gate")
class DeleteGateRouter(Router):
  keeps_positions = True
  soft_in_training = True

  def __init__(self, d_model: int, *, scale: float, rngs: nnx.Rngs):
    if scale >= 0:
      raise ValueError(f"model.delete_gate_scale={scale} must be negative (MrT5 uses -30)")
    self.scale = scale
    self.norm = RMSNorm(d_model, eps=1e-6)  # T5 LayerNorm: RMS, no centring
    self.w = nnx.Param(nnx.initializers.xavier_uniform()(rngs.params(), (d_model, 1), jnp.float32),
                       out_sharding=("embed", None))
    self.b = nnx.Param(jnp.ones((1,), jnp.float32), out_sharding=(None,))

  @classmethod
  def check(cls, cfg: ModelConfig) -> None:
    super().check(cfg)
    if cfg.num_stages != 2 or any(g.mixer != "attention" for g in cfg.stages[1].main):
      raise ValueError("model.router='delete_gate' soft-deletes through attention bias: the layout must "
                       "have one outer stage and an attention-only main network (e.g. \"['m2', ['T4'], 'm2']\")")

  @classmethod
  def build(cls, cfg: ModelConfig, st: StageConfig, *, rngs: nnx.Rngs) -> "DeleteGateRouter":
    return cls(st.d_model, scale=cfg.delete_gate_scale, rngs=rngs)

  @classmethod
  def loss_weight(cls, ratio_loss_weight: float, controller: ControllerState) -> jax.Array:
    del ratio_loss_weight
    return controller.alpha

  @classmethod
  def next_controller(cls, cfg: ModelConfig, controller: ControllerState, metrics: dict, *, kp: float,
                      ki: float, two_sided: bool = False) -> ControllerState:
    target = 1.0 - 1.0 / cfg.stages[0].target_ratio  # keep 1/N of the positions
    return update_controller(controller, metrics["stage0/delete_frac"], target, kp, ki, two_sided)

  @classmethod
  def flops_per_position(cls, cfg: ModelConfig, st: StageConfig) -> float:
    del cfg
    return 2 * st.d_model  # w

  def gate(self, x_BLD: jax.Array) -> jax.Array:
    logit_BL = (self.norm(x_BLD) @ self.w[...])[..., 0] + self.b[0]
    return self.scale * jax.nn.sigmoid(-logit_BL)

  def __call__(self, x_BLD, *, tokens_BL, segment_ids_BL, positions_BL, train: bool) -> RouterOutput:
    del tokens_BL, positions_BL
    valid_BL = segment_ids_BL > 0
    starts_BL = document_starts(segment_ids_BL)
    # Document starts are always kept; padding is always deleted.
    g_BL = jnp.where(starts_BL, 0.0, jnp.where(valid_BL, self.gate(x_BLD), self.scale))
    keep_BL = (g_BL > self.scale / 2) & valid_BL
    keep_prob_BL = 1.0 - g_BL / self.scale
    metrics = {"gate_mean": valid_mean(g_BL, valid_BL),
               "delete_frac": valid_mean(~keep_BL, valid_BL)}
    loss = valid_mean(g_BL, valid_BL)
    return RouterOutput(keep_BL, keep_prob_BL, loss, metrics, key_bias_BL=g_BL if train else None)

  def decode(self, h_BD, token_B, position_B, state, active_B, lm):
    del token_B, active_B, lm
    return (*rule_decision(self.gate(h_BD[:, None])[:, 0] > self.scale / 2, position_B), state)
