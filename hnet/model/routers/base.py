"""The router interface: what stages, generation, losses, FLOP counts and the trainer ask of a router.

A router decides which positions of an outer stage start a chunk. A new router is one file in this
folder: a `Router` subclass under `@register("name")`, and an import line in `routers/__init__.py`
(or, outside the package, any module imported before the model is built). Everything else asks the
class or instance, never the router's name:

  forward   `router(x_BLD, tokens_BL=..., segment_ids_BL=..., positions_BL=..., train=...)` -> RouterOutput
  decoding  `init_decode(batch, d_model, lm)` and `decode(h_BD, token_B, position_B, state, active_B, lm)`
  dechunk   `smooths` (H-Net's EMA and confidence STE), `keeps_positions` (inner RoPE positions)
  training  `soft_in_training` (inner network over every position), `loss_weight`, `next_controller`,
            `frozen` sub-modules and the checkpoints they load (`pretrained`)
  FLOPs     `flops_per_position`
  config    `check(cfg)`: the settings this router needs, as one-line ValueErrors
"""
# pylint: disable=invalid-name
from typing import Any, Callable, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from hnet.config import ModelConfig, StageConfig
from hnet.model.chunking import document_starts
from hnet.model.loss import ControllerState


class RouterOutput(NamedTuple):
  boundary_BL: jax.Array  # bool: position starts a chunk (document starts included)
  prob_BL: jax.Array  # float32 boundary probability (1/0 for rule-based routers)
  loss: jax.Array  # float32 scalar, unweighted auxiliary loss (0 for rule-based routers)
  metrics: dict  # float32 scalars for logging
  key_bias_BL: jax.Array | None = None  # MrT5 soft deletion: additive inner-attention bias per key


class ByteLMSteps(NamedTuple):
  """How generation steps a byte LM one position at a time (given to routers that hold one).

  `init(lm, batch)` -> state; `step(lm, token_B, state, active_B)` -> (logits_BV, state), inactive rows unchanged.
  """
  init: Callable[[nnx.Module, int], Any]
  step: Callable[[nnx.Module, jax.Array, Any, jax.Array], tuple[jax.Array, Any]]


class Router(nnx.Module):
  """Base of every router; the class itself is the flat model's 'none' (one stage, nothing to route)."""

  smooths: ClassVar[bool] = False  # dechunking smooths inner outputs by the boundary probability (H-Net)
  keeps_positions: ClassVar[bool] = False  # inner RoPE positions are the kept bytes' positions (MrT5)
  soft_in_training: ClassVar[bool] = False  # train=True runs the inner network on every position
  reads_bytes: ClassVar[bool] = False  # needs the byte tokens: outermost stage of a 2-stage model only
  frozen: ClassVar[tuple[str, ...]] = ()  # sub-modules the optimizer leaves as loaded

  # --- configuration -------------------------------------------------------------------------
  @classmethod
  def check(cls, cfg: ModelConfig) -> None:
    """Raises a one-line ValueError when `cfg` cannot hold this router."""
    if cls.reads_bytes and cfg.num_stages > 2:
      raise ValueError(f"model.router={cfg.router!r} reads the bytes: only one outer stage is supported")

  @classmethod
  def build(cls, cfg: ModelConfig, st: StageConfig, *, rngs: nnx.Rngs) -> "Router":
    """The router of outer stage `st`."""
    del cfg, st, rngs
    return cls()

  @classmethod
  def pretrained(cls, cfg: ModelConfig) -> dict[str, tuple[str, str]]:
    """{frozen sub-module: (the config key naming its train.py work dir, that work dir)}: loaded at step 0."""
    del cfg
    return {}

  # --- training ------------------------------------------------------------------------------
  @classmethod
  def loss_weight(cls, ratio_loss_weight: float, controller: ControllerState) -> jax.Array:
    """Weight of the router's auxiliary loss in the training objective (0: the loss is only logged)."""
    del ratio_loss_weight, controller
    return jnp.float32(0.0)

  @classmethod
  def next_controller(cls, cfg: ModelConfig, controller: ControllerState, metrics: dict, *, kp: float,
                      ki: float, two_sided: bool = False) -> ControllerState:
    """The loss-weight controller after a step with these (stage-prefixed) metrics; unchanged by default."""
    del cfg, metrics, kp, ki, two_sided
    return controller

  @classmethod
  def flops_per_position(cls, cfg: ModelConfig, st: StageConfig) -> float:
    """Forward FLOPs of the router per position of stage `st` (matmuls only)."""
    del cfg, st
    return 0.0

  # --- forward and decoding ------------------------------------------------------------------
  def __call__(self, x_BLD, *, tokens_BL, segment_ids_BL, positions_BL, train: bool) -> RouterOutput:
    raise NotImplementedError(f"{type(self).__name__} does not route: a flat model has no router")

  def init_decode(self, batch: int, d_model: int, lm: ByteLMSteps) -> Any:
    """The router's own decoding state (a pytree with a leading batch axis, or None)."""
    del batch, d_model, lm
    return None

  def decode(self, h_BD: jax.Array, token_B: jax.Array, position_B: jax.Array, state: Any, active_B: jax.Array,
             lm: ByteLMSteps) -> tuple[jax.Array, jax.Array, Any]:
    """One position: (boundary_B, prob_B, state), equal to the forward pass at that position.

    `position_B` counts positions already seen in the row (0: the first, always a boundary); rows
    where `active_B` is False keep their state.
    """
    raise NotImplementedError(f"{type(self).__name__} has no decoding rule")


REGISTRY: dict[str, type[Router]] = {"none": Router}


def register(name: str):
  """Class decorator: makes the router available as `model.router=name`."""
  def add(cls: type[Router]) -> type[Router]:
    if name in REGISTRY and REGISTRY[name] is not cls:
      raise ValueError(f"router {name!r} is registered twice ({REGISTRY[name].__name__}, {cls.__name__})")
    REGISTRY[name] = cls
    return cls
  return add


def router_class(name: str) -> type[Router]:
  if name not in REGISTRY:
    raise ValueError(f"model.router: unknown router {name!r}; choose one of {tuple(REGISTRY)}")
  return REGISTRY[name]


def valid_mean(x_BL: jax.Array, valid_BL: jax.Array) -> jax.Array:
  """Mean over non-padding positions, float32."""
  v = valid_BL.astype(jnp.float32)
  return jnp.sum(x_BL.astype(jnp.float32) * v) / jnp.maximum(jnp.sum(v), 1.0)


def rule_output(boundary_BL: jax.Array, segment_ids_BL: jax.Array) -> RouterOutput:
  """Output of a parameter-free router: probability 1 at boundaries, 0 elsewhere."""
  boundary_BL = (boundary_BL & (segment_ids_BL > 0)) | document_starts(segment_ids_BL)
  return RouterOutput(boundary_BL, boundary_BL.astype(jnp.float32), jnp.zeros((), jnp.float32), {})


def rule_decision(boundary_B: jax.Array, position_B: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(boundary_B, prob_B) of a rule-based router at one position: the first position always starts."""
  boundary_B = boundary_B | (position_B == 0)
  return boundary_B, boundary_B.astype(jnp.float32)
