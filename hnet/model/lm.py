"""The byte-level language model: embedding -> stage 0 (recursively) -> LM head."""
# pylint: disable=invalid-name
import jax
import jax.numpy as jnp
from flax import nnx

from hnet.config import ModelConfig
from hnet.model import routers
from hnet.model.routers import entropy as entropy_router
from hnet.model.stage import Stage


class HNetLM(nnx.Module):
  """Next-byte logits for byte tokens; see `__call__`.

  Built without eager sharding: parameters keep logical-axis metadata and the trainer
  places them on a mesh (hnet/sharding.py).
  """

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    routers.check(cfg)  # the router exists and the config holds what it needs
    self.cfg = cfg
    d0 = cfg.stages[0].d_model
    with nnx.use_eager_sharding(False):
      self.embed = nnx.Embed(
          cfg.vocab_size, d0, embedding_init=nnx.with_partitioning(nnx.initializers.normal(1.0),
                                                                   ("vocab", "embed")), rngs=rngs)
      self.backbone = Stage(cfg, 0, rngs=rngs)
      self.lm_head = nnx.Linear(
          d0, cfg.vocab_size, use_bias=False, dtype=jnp.dtype(cfg.dtype),
          kernel_init=nnx.with_partitioning(nnx.initializers.normal(cfg.init_std), ("embed", "vocab")),
          rngs=rngs)

  def __call__(self, tokens_BL: jax.Array, segment_ids_BL: jax.Array | None = None, *,
               train: bool = False) -> tuple[jax.Array, dict]:
    """Returns float32 logits (B, L, 256) and aux: per-stage router losses and metrics.

    `segment_ids_BL` numbers the packed documents of each row (0 = padding); None means
    one document per row. `train` selects soft deletion for the delete-gate router.
    """
    if segment_ids_BL is None:
      segment_ids_BL = jnp.ones(tokens_BL.shape, jnp.int32)
    with jax.named_scope("embed"):
      x_BLD = self.embed(tokens_BL)
    with jax.named_scope("stage0"):
      y_BLD, stats = self.backbone(x_BLD, segment_ids_BL, tokens_BL=tokens_BL, train=train)
    with jax.named_scope("lm_head"):
      logits_BLV = self.lm_head(y_BLD).astype(jnp.float32)
    aux = {
        "router_losses": tuple(s.pop("router_loss") for s in stats),
        "metrics": {f"stage{i}/{k}": v for i, s in enumerate(stats) for k, v in s.items()},
    }
    return logits_BLV, aux


def stage_of_param(path: tuple) -> int:
  """Stage a parameter belongs to (for per-stage lr multipliers): the number of `inner` hops.

  The innermost main network counts as stage S-1; embedding and LM head as stage 0.
  """
  return sum(1 for p in path if str(p) == "inner")


def count_params(model: nnx.Module) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


entropy_router.register_byte_lm(HNetLM)  # BLT's router holds a byte LM of this class
