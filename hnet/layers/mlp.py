"""SwiGLU MLP: fc2(silu(gate) * y) with [y | gate] = fc1(x)."""
# pylint: disable=invalid-name
import jax
import jax.numpy as jnp
from flax import nnx


class SwiGLU(nnx.Module):

  def __init__(self, d_model: int, d_ff: int, *, init_std: float, out_init_std: float,
               dtype=jnp.float32, rngs: nnx.Rngs):
    self.d_ff = d_ff
    self.dtype = dtype
    self.fc1 = nnx.Linear(
        d_model, 2 * d_ff, use_bias=False, dtype=dtype,
        kernel_init=nnx.with_partitioning(nnx.initializers.normal(init_std), ("embed", "mlp")), rngs=rngs)
    self.fc2 = nnx.Linear(
        d_ff, d_model, use_bias=False, dtype=dtype,
        kernel_init=nnx.with_partitioning(nnx.initializers.normal(out_init_std), ("mlp", "embed")), rngs=rngs)

  def __call__(self, x_BLD: jax.Array) -> jax.Array:
    h_BLF2 = self.fc1(x_BLD.astype(self.dtype))
    y_BLF, gate_BLF = h_BLF2[..., : self.d_ff], h_BLF2[..., self.d_ff:]
    return self.fc2(jax.nn.silu(gate_BLF) * y_BLF)
