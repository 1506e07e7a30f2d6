"""RMSNorm, computed in float32."""
# pylint: disable=invalid-name
import jax
import jax.numpy as jnp
from flax import nnx


class RMSNorm(nnx.Module):
  """x / rms(x) * w, weight initialised to ones; returns float32."""

  def __init__(self, dim: int, *, eps: float = 1e-5, rngs: nnx.Rngs | None = None):
    del rngs  # deterministic init
    self.eps = eps
    self.weight = nnx.Param(jnp.ones((dim,), jnp.float32), out_sharding=("norm",))

  def __call__(self, x_BLD: jax.Array) -> jax.Array:
    x_BLD = x_BLD.astype(jnp.float32)
    ms_BL1 = jnp.mean(jnp.square(x_BLD), axis=-1, keepdims=True)
    w = self.weight[...].reshape((1,) * (x_BLD.ndim - 1) + (-1,))
    return x_BLD * jax.lax.rsqrt(ms_BL1 + self.eps) * w
