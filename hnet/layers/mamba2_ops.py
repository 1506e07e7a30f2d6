"""Mamba2's elementwise blocks with written-out backward passes (`jax.custom_vjp`).

The causal depthwise conv + SiLU, and the D skip + gated RMSNorm, computed in float32 and returned in
the compute dtype. Their backward passes recompute the float32 intermediates from the inputs
instead of storing them (XLA would otherwise keep (B, L, C) float32 copies for the backward).

Legend: C channels; W conv width; X any leading axes; I = H·P.
"""
# pylint: disable=invalid-name
import jax
import jax.numpy as jnp

f32 = jnp.float32


def _silu_grad(p):
  sig = jax.nn.sigmoid(p)
  return sig * (1.0 + p * (1.0 - sig))


def _conv_taps(x_BLC: jax.Array, run_BL: jax.Array, W: int) -> list[jax.Array]:
  """Tap w of the causal conv: x at t - (W-1-w), zero before the start or across a document change."""
  L = x_BLC.shape[1]
  xpad_BLC = jnp.pad(x_BLC, [(0, 0), (W - 1, 0), (0, 0)])
  runpad_BL = jnp.pad(run_BL, [(0, 0), (W - 1, 0)], constant_values=-1)
  return [jnp.where((runpad_BL[:, w:w + L] == run_BL)[..., None], xpad_BLC[:, w:w + L], 0) for w in range(W)]


@jax.custom_vjp
def conv_silu(x_BLC: jax.Array, w_WC: jax.Array, b_C: jax.Array, run_BL: jax.Array) -> jax.Array:
  """silu(causal depthwise conv + bias) in float32, returned in x's dtype; taps stay inside a document.

  The backward is written out so that nothing of shape (B, L, C) in float32 is stored: the conv is
  recomputed from x, and the gradient reaches x through the mirrored taps.
  """
  return _conv_silu_fwd(x_BLC, w_WC, b_C, run_BL)[0]


def _conv_pre(x_BLC, w_WC, b_C, run_BL):
  taps = _conv_taps(x_BLC, run_BL, w_WC.shape[0])
  return sum(t.astype(f32) * w_WC[w][None, None] for w, t in enumerate(taps)) + b_C[None, None], taps


def _conv_silu_fwd(x_BLC, w_WC, b_C, run_BL):
  pre_BLC, _ = _conv_pre(x_BLC, w_WC, b_C, run_BL)
  return jax.nn.silu(pre_BLC).astype(x_BLC.dtype), (x_BLC, w_WC, b_C, run_BL)


def _conv_silu_bwd(res, dout_BLC):
  x_BLC, w_WC, b_C, run_BL = res
  W, L = w_WC.shape[0], x_BLC.shape[1]
  pre_BLC, taps = _conv_pre(x_BLC, w_WC, b_C, run_BL)
  g_BLC = dout_BLC.astype(f32) * _silu_grad(pre_BLC)
  dw_WC = jnp.stack([jnp.sum(g_BLC * t.astype(f32), axis=(0, 1)) for t in taps])
  db_C = jnp.sum(g_BLC, axis=(0, 1))
  # Tap w at position t read x at t - k (k = W-1-w) when the runs match: x at s gets g at s + k.
  gpad_BLC = jnp.pad(g_BLC, [(0, 0), (0, W - 1), (0, 0)])
  runpad_BL = jnp.pad(run_BL, [(0, 0), (0, W - 1)], constant_values=-1)
  dx_BLC = 0.0
  for w in range(W):
    k = W - 1 - w
    same_BL1 = (runpad_BL[:, k:k + L] == run_BL)[..., None]
    dx_BLC = dx_BLC + jnp.where(same_BL1, gpad_BLC[:, k:k + L], 0.0) * w_WC[w][None, None]
  return dx_BLC.astype(x_BLC.dtype), dw_WC.astype(w_WC.dtype), db_C.astype(b_C.dtype), None


conv_silu.defvjp(_conv_silu_fwd, _conv_silu_bwd)


_NORM_EPS = 1e-5


@jax.custom_vjp
def gated_rmsnorm(y_XHP: jax.Array, x_XHP: jax.Array, z_XI: jax.Array, D_H: jax.Array, w_I: jax.Array) -> jax.Array:
  """RMSNorm((y + D x) · silu(z)) · w in float32, returned in z's dtype (X: any leading axes).

  Written-out backward: recomputes the normalised values from the inputs instead of storing
  float32 copies of them.
  """
  return _gated_rmsnorm_fwd(y_XHP, x_XHP, z_XI, D_H, w_I)[0]


def _gated_parts(y_XHP, x_XHP, z_XI, D_H):
  lead = z_XI.shape[:-1]
  yx_XI = (y_XHP.astype(f32) + x_XHP.astype(f32) * D_H.astype(f32).reshape((1,) * len(lead) + (-1, 1))
           ).reshape(z_XI.shape)
  v_XI = yx_XI * jax.nn.silu(z_XI.astype(f32))
  r_X1 = jax.lax.rsqrt(jnp.mean(jnp.square(v_XI), axis=-1, keepdims=True) + _NORM_EPS)
  return yx_XI, v_XI, r_X1


def _gated_rmsnorm_fwd(y_XHP, x_XHP, z_XI, D_H, w_I):
  _, v_XI, r_X1 = _gated_parts(y_XHP, x_XHP, z_XI, D_H)
  out_XI = (v_XI * r_X1 * w_I.astype(f32).reshape((1,) * (z_XI.ndim - 1) + (-1,))).astype(z_XI.dtype)
  return out_XI, (y_XHP, x_XHP, z_XI, D_H, w_I)


def _gated_rmsnorm_bwd(res, dout_XI):
  y_XHP, x_XHP, z_XI, D_H, w_I = res
  lead = z_XI.shape[:-1]
  yx_XI, v_XI, r_X1 = _gated_parts(y_XHP, x_XHP, z_XI, D_H)
  dout_XI = dout_XI.astype(f32)
  dn_XI = dout_XI * w_I.astype(f32).reshape((1,) * len(lead) + (-1,))
  dw_I = jnp.sum(dout_XI * v_XI * r_X1, axis=tuple(range(len(lead))))
  dv_XI = r_X1 * dn_XI - r_X1 ** 3 * v_XI * jnp.mean(dn_XI * v_XI, axis=-1, keepdims=True)
  z32_XI = z_XI.astype(f32)
  dz_XI = dv_XI * yx_XI * _silu_grad(z32_XI)
  dyx_XHP = (dv_XI * jax.nn.silu(z32_XI)).reshape(y_XHP.shape)
  dx_XHP = dyx_XHP * D_H.astype(f32).reshape((1,) * len(lead) + (-1, 1))
  dD_H = jnp.sum(dyx_XHP * x_XHP.astype(f32), axis=tuple(range(len(lead))) + (-1,))
  dy_XHP, dx_XHP = jax.lax.optimization_barrier((dyx_XHP.astype(y_XHP.dtype), dx_XHP.astype(x_XHP.dtype)))
  return dy_XHP, dx_XHP, dz_XI.astype(z_XI.dtype), dD_H.astype(D_H.dtype), dw_I.astype(w_I.dtype)


gated_rmsnorm.defvjp(_gated_rmsnorm_fwd, _gated_rmsnorm_bwd)
