"""Rotary position embedding (rotate-half form) on the first `rotary_dim` dims of each head."""
# pylint: disable=invalid-name
import jax
import jax.numpy as jnp


def apply_rope(x_BLHK: jax.Array, positions_BL: jax.Array, rotary_dim: int,
               base: float = 10000.0) -> jax.Array:
  """Rotates pairs (i, i + rotary_dim/2) of the first `rotary_dim` dims by position-dependent angles."""
  if rotary_dim == 0:
    return x_BLHK
  half = rotary_dim // 2
  inv_freq_R = 1.0 / (base ** (jnp.arange(half, dtype=jnp.float32) * 2.0 / rotary_dim))
  angle_BLR = positions_BL.astype(jnp.float32)[..., None] * inv_freq_R[None, None, :]
  cos_BL1R = jnp.cos(angle_BLR)[:, :, None, :]
  sin_BL1R = jnp.sin(angle_BLR)[:, :, None, :]
  x_rot = x_BLHK[..., :rotary_dim].astype(jnp.float32)
  x1, x2 = x_rot[..., :half], x_rot[..., half:]
  rotated = jnp.concatenate([x1 * cos_BL1R - x2 * sin_BL1R, x2 * cos_BL1R + x1 * sin_BL1R], axis=-1)
  return jnp.concatenate([rotated.astype(x_BLHK.dtype), x_BLHK[..., rotary_dim:]], axis=-1)
