"""The output every router returns."""
# pylint: disable=invalid-name
from typing import NamedTuple

import jax
import jax.numpy as jnp

from hnet.chunking import document_starts


class RouterOutput(NamedTuple):
  boundary_BL: jax.Array  # bool: position starts a chunk (document starts included)
  prob_BL: jax.Array  # float32 boundary probability (1/0 for rule-based routers)
  loss: jax.Array  # float32 scalar, unweighted auxiliary loss (0 for rule-based routers)
  metrics: dict  # float32 scalars for logging
  key_bias_BL: jax.Array | None = None  # MrT5 soft deletion: additive inner-attention bias per key


def valid_mean(x_BL: jax.Array, valid_BL: jax.Array) -> jax.Array:
  """Mean over non-padding positions, float32."""
  v = valid_BL.astype(jnp.float32)
  return jnp.sum(x_BL.astype(jnp.float32) * v) / jnp.maximum(jnp.sum(v), 1.0)


def rule_output(boundary_BL: jax.Array, segment_ids_BL: jax.Array) -> RouterOutput:
  """Output of a parameter-free router: probability 1 at boundaries, 0 elsewhere."""
  boundary_BL = (boundary_BL & (segment_ids_BL > 0)) | document_starts(segment_ids_BL)
  return RouterOutput(boundary_BL, boundary_BL.astype(jnp.float32), jnp.zeros((), jnp.float32), {})
