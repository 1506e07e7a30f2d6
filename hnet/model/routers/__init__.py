"""Routers decide which positions start a chunk; `base.Router` is the interface all of them share.

A new router is one file here with a `@register("name")` class, plus its import line below.
"""
from flax import nnx

from hnet.config import ModelConfig, StageConfig
from hnet.model.routers import cosine, delete_gate, entropy, stride, whitespace  # noqa: F401  (they register)
from hnet.model.routers.base import REGISTRY, ByteLMSteps, Router, RouterOutput, register, router_class

__all__ = ["REGISTRY", "ByteLMSteps", "Router", "RouterOutput", "check", "make_router", "register",
           "router_class", "stage_lengths"]


def check(cfg: ModelConfig) -> type[Router]:
  """The router class of `cfg`, after its own checks of the config (one-line ValueErrors)."""
  cls = router_class(cfg.router)
  cls.check(cfg)
  return cls


def make_router(cfg: ModelConfig, st: StageConfig, *, rngs: nnx.Rngs) -> Router:
  return router_class(cfg.router).build(cfg, st, rngs=rngs)


def stage_lengths(cfg: ModelConfig, seq_len: int, *, train: bool = False) -> list[int]:
  """Sequence length each stage runs at for `seq_len` bytes (static capacities).

  A router that trains soft (MrT5's delete gate) runs the inner network on every position when `train`.
  """
  every_position = train and router_class(cfg.router).soft_in_training
  lengths = [seq_len]
  for s in range(cfg.num_stages - 1):
    lengths.append(lengths[-1] if every_position else cfg.capacity(s, lengths[-1]))
  return lengths
