"""BLT entropy patching: a chunk starts where a frozen byte LM is unsure of the byte.

H_t = -Σ_v p(v | x_≤t) ln p(v | x_≤t) is the entropy of the LM's prediction for byte t+1 (nats).
Byte t starts a chunk iff H_{t-1} > θ (global rule), or H_{t-1} - H_{t-2} > θ (approximately
monotonic rule, whose first decision, at a document's byte 1, is always a start), as in BLT.
Document starts always start a chunk. The LM is another checkpoint of this trainer
(configs/entropy_lm.py): it runs inside the forward pass under `stop_gradient`, and the
optimizer leaves it untouched (hnet/train/optim.py, FROZEN).
"""
# pylint: disable=invalid-name
import jax
import jax.numpy as jnp
from flax import nnx

from typing import NamedTuple

from hnet.config import ModelConfig, StageConfig
from hnet.model.routers.base import ByteLMSteps, Router, RouterOutput, register, rule_output, valid_mean


def next_byte_entropy(logits_XV: jax.Array) -> jax.Array:
  """Entropy (nats, float32) of the next-byte distributions over the last axis."""
  logp_XV = jax.nn.log_softmax(logits_XV.astype(jnp.float32), axis=-1)
  return -jnp.sum(jnp.exp(logp_XV) * logp_XV, axis=-1)


def starts_chunk(h_prev: jax.Array, h_prev2: jax.Array, position: jax.Array, *, rule: str,
                 threshold: float) -> jax.Array:
  """BLT's start rule for a byte at `position` in its document, from the two previous entropies."""
  if rule == "global":
    return (position >= 1) & (h_prev > threshold)
  return (position == 1) | ((position >= 2) & (h_prev - h_prev2 > threshold))


# The byte LM this router holds is the package's own model class, one layer up (models build stages,
# stages build routers): `hnet.model.lm` registers it here when it is imported. The one upward reach of
# the package, made explicit instead of an import circle.
_BYTE_LM: type | None = None


def register_byte_lm(cls: type) -> None:
  """Called by `hnet.model.lm` with `HNetLM`: the class of the frozen entropy LM."""
  global _BYTE_LM  # pylint: disable=global-statement
  _BYTE_LM = cls


class EntropyState(NamedTuple):
  """Decoding state: the frozen LM's caches and the entropies of the two previous bytes."""
  lm: object
  h_prev_B: jax.Array
  h_prev2_B: jax.Array


@register("entropy")
class EntropyRouter(Router):
  reads_bytes = True
  frozen = ("entropy_lm",)

  @classmethod
  def check(cls, cfg: ModelConfig) -> None:
    super().check(cfg)
    if cfg.entropy_lm is None:
      raise ValueError("model.router='entropy' needs model.entropy_model: the work dir of a byte LM trained "
                       "with configs/entropy_lm.py")

  @classmethod
  def build(cls, cfg: ModelConfig, st: StageConfig, *, rngs: nnx.Rngs) -> "EntropyRouter":
    del st
    return cls(cfg, rngs=rngs)

  @classmethod
  def pretrained(cls, cfg: ModelConfig) -> dict[str, tuple[str, str]]:
    return {"entropy_lm": ("model.entropy_model", cfg.entropy_model)}

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    if _BYTE_LM is None:
      raise RuntimeError("EntropyRouter needs hnet.model.lm imported (it registers the byte LM class)")
    self.entropy_lm = _BYTE_LM(cfg.entropy_lm, rngs=rngs)
    self.rule = cfg.entropy_rule
    self.threshold = cfg.entropy_threshold

  def entropies(self, tokens_BL: jax.Array, segment_ids_BL: jax.Array) -> jax.Array:
    """H_t for every position (float32), documents independent, no gradient."""
    logits_BLV, _ = self.entropy_lm(tokens_BL, segment_ids_BL)
    return jax.lax.stop_gradient(next_byte_entropy(logits_BLV))

  def __call__(self, x_BLD, *, tokens_BL, segment_ids_BL, positions_BL, train: bool) -> RouterOutput:
    del x_BLD, train
    if tokens_BL is None:
      raise ValueError("the entropy router needs byte tokens: it only works at the outermost stage")
    h_BL = self.entropies(tokens_BL, segment_ids_BL)
    shift = lambda a_BL: jnp.pad(a_BL[:, :-1], ((0, 0), (1, 0)))  # noqa: E731  a[t-1]; positions 0 never read it
    h_prev_BL = shift(h_BL)
    start_BL = starts_chunk(h_prev_BL, shift(h_prev_BL), positions_BL, rule=self.rule, threshold=self.threshold)
    out = rule_output(start_BL, segment_ids_BL)
    return out._replace(metrics={"entropy_mean": valid_mean(h_BL, segment_ids_BL > 0)})

  def init_decode(self, batch, d_model, lm: ByteLMSteps):
    del d_model
    zeros_B = jnp.zeros((batch,), jnp.float32)
    return EntropyState(lm.init(self.entropy_lm, batch), zeros_B, zeros_B)

  def decode(self, h_BD, token_B, position_B, state: EntropyState, active_B, lm: ByteLMSteps):
    """Decides from the two earlier entropies, then reads this byte into the LM."""
    del h_BD
    b_B = (position_B == 0) | starts_chunk(state.h_prev_B, state.h_prev2_B, position_B, rule=self.rule,
                                           threshold=self.threshold)
    logits_BV, lm_state = lm.step(self.entropy_lm, token_B, state.lm, active_B)
    h_B = jnp.where(active_B, next_byte_entropy(logits_BV), state.h_prev_B)
    h_prev_B = jnp.where(active_B, state.h_prev_B, state.h_prev2_B)
    return b_B, b_B.astype(jnp.float32), EntropyState(lm_state, h_B, h_prev_B)
