"""Next-byte cross-entropy over packed rows and the MrT5 PI controller (the delete gate's loss weight)."""
# pylint: disable=invalid-name
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

LN2 = math.log(2.0)


def next_byte_nll(logits_BLV: jax.Array, targets_BL: jax.Array, loss_mask_BL: jax.Array) -> jax.Array:
  """Next-byte NLL per position in nats (float32, softmax in float32), zero where `loss_mask_BL` is."""
  nll_BL = optax.softmax_cross_entropy_with_integer_labels(logits_BLV.astype(jnp.float32), targets_BL)
  return nll_BL * loss_mask_BL.astype(jnp.float32)


class ControllerState(NamedTuple):
  """MrT5's PI controller: drives the delete-gate regulariser weight toward a deletion rate."""
  p: jax.Array
  i: jax.Array
  alpha: jax.Array

  @classmethod
  def init(cls) -> "ControllerState":
    return cls(*(jnp.zeros((), jnp.float32) for _ in range(3)))  # distinct buffers (donation)


def update_controller(state: ControllerState, delete_rate: jax.Array, target: float, kp: float, ki: float,
                      two_sided: bool = False) -> ControllerState:
  """e = target - rate; P <- 0.9 P + 0.1 kp e; I <- I + ki e; alpha = max(0, P + I) (MrT5's).

  MrT5's alpha only rewards deleting: once the language-model loss itself gains from deleting more,
  nothing pulls the rate back to the target. `two_sided` lets alpha go negative (then the regulariser
  rewards keeping), a deviation from MrT5 that holds the rate at the target from both sides.
  """
  err = target - delete_rate
  p = 0.9 * state.p + 0.1 * kp * err
  i = state.i + ki * err
  return ControllerState(p, i, p + i if two_sided else jnp.maximum(0.0, p + i))
