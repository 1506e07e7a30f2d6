"""The SSD scan as Pallas GPU kernels lowered through Triton, forward and backward.

Grid (batch, head): GPU program instances run in parallel, so each one walks its head's chunks in a
`fori_loop` with the state (N, P) in registers, writing the chunk-entering states for the backward,
which walks them in reverse with the state cotangent. `CompilerParams` from
`jax.experimental.pallas.triton` selects the Triton lowering (without it Pallas on GPU lowers
through Mosaic GPU). Same array layouts as `ssd_tpu`; every loaded tile must have power-of-two
sides (Q, P, N, 8).
"""
# pylint: disable=invalid-name
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from hnet.kernels.ssd_chunk import NT, ROWS, chunk_backward, chunk_forward, load_rows

f32 = jnp.float32
_ = pl.squeezed  # a block dim the kernel does not see
_PARAMS = pltriton.CompilerParams(num_warps=8, num_stages=1)


def _specs(R, L, C, Q, P, N):
  """Whole-sequence blocks of one (batch, head) on grid (b, h)."""
  return dict(
      x=pl.BlockSpec((_, _, L, P), lambda b, h: (b, h, 0, 0)),
      v=pl.BlockSpec((_, _, C, ROWS, Q), lambda b, h: (b, h, 0, 0, 0)),
      bc=pl.BlockSpec((_, _, L, N), lambda b, h: (b, jax.lax.div(h, R), 0, 0)),
      state=pl.BlockSpec((_, _, N, P), lambda b, h: (b, h, 0, 0)),
      states=pl.BlockSpec((_, _, C, N, P), lambda b, h: (b, h, 0, 0, 0)),
  )


def _fwd_kernel(x_ref, v_ref, b_ref, c_ref, s0_ref, y_ref, states_ref, final_ref, *, chunk, dtype):
  Q, C = chunk, v_ref.shape[0]

  def body(c, St_NP):
    rows = pl.ds(c * Q, Q)
    B_QN, C_QN = b_ref[rows, :], c_ref[rows, :]
    CB_QS = jax.lax.dot_general(C_QN, B_QN, NT, preferred_element_type=f32)
    states_ref[c] = St_NP
    y_QP, St_NP = chunk_forward(x_ref[rows, :], load_rows(v_ref, c), B_QN, C_QN, CB_QS, St_NP, dtype)
    y_ref[rows, :] = y_QP.astype(y_ref.dtype)
    return St_NP

  final_ref[...] = jax.lax.fori_loop(0, C, body, s0_ref[...].astype(f32))


def forward(x_BHLP, v_BHC8Q, B_BGLN, C_BGLN, S0t_BHNP, *, chunk: int, interpret: bool = False):
  """(y (B, H, L, P), chunk-entering states (B, H, C, N, P) float32, final state (B, H, N, P) float32)."""
  Bsz, H, L, P = x_BHLP.shape
  G, N = B_BGLN.shape[1], B_BGLN.shape[3]
  C = L // chunk
  s = _specs(H // G, L, C, chunk, P, N)
  return pl.pallas_call(
      functools.partial(_fwd_kernel, chunk=chunk, dtype=x_BHLP.dtype),
      grid=(Bsz, H),
      in_specs=[s["x"], s["v"], s["bc"], s["bc"], s["state"]],
      out_specs=[s["x"], s["states"], s["state"]],
      out_shape=[jax.ShapeDtypeStruct(x_BHLP.shape, x_BHLP.dtype),
                 jax.ShapeDtypeStruct((Bsz, H, C, N, P), f32), jax.ShapeDtypeStruct((Bsz, H, N, P), f32)],
      compiler_params=_PARAMS, interpret=interpret, name="ssd_fwd",
  )(x_BHLP, v_BHC8Q, B_BGLN, C_BGLN, S0t_BHNP)


def _bwd_kernel(x_ref, v_ref, b_ref, c_ref, states_ref, dy_ref, dfinal_ref, dx_ref, dv_ref, db_ref, dc_ref, ds0_ref,
                *, chunk, dtype):
  Q, C = chunk, v_ref.shape[0]

  def body(i, dSt_NP):
    c = C - 1 - i
    rows = pl.ds(c * Q, Q)
    B_QN, C_QN = b_ref[rows, :], c_ref[rows, :]
    CB_QS = jax.lax.dot_general(C_QN, B_QN, NT, preferred_element_type=f32)
    dx_QP, dv_ref[c], dCB_QS, dB_QN, dC_QN, dSt_NP = chunk_backward(
        x_ref[rows, :], load_rows(v_ref, c), B_QN, C_QN, CB_QS, states_ref[c], dSt_NP, dy_ref[rows, :], dtype)
    dx_ref[rows, :] = dx_QP.astype(dx_ref.dtype)
    dc_ref[rows, :] = dC_QN + jax.lax.dot(dCB_QS.astype(dtype), B_QN.astype(dtype), preferred_element_type=f32)
    db_ref[rows, :] = dB_QN + jax.lax.dot(dCB_QS.T.astype(dtype), C_QN.astype(dtype), preferred_element_type=f32)
    return dSt_NP

  ds0_ref[...] = jax.lax.fori_loop(0, C, body, dfinal_ref[...].astype(f32))


def backward(x_BHLP, v_BHC8Q, B_BGLN, C_BGLN, states_BHCNP, dy_BHLP, dfinal_BHNP, *, chunk: int,
             interpret: bool = False):
  """(dx, dv (B, H, C, 8, Q), dB, dC (B, G, L, N), d initial state (B, H, N, P)), float32 except dx."""
  Bsz, H, L, P = x_BHLP.shape
  G, N = B_BGLN.shape[1], B_BGLN.shape[3]
  C = L // chunk
  s = _specs(H // G, L, C, chunk, P, N)
  per_head = pl.BlockSpec((_, _, L, N), lambda b, h: (b, h, 0, 0))
  dx_BHLP, dv_BHC8Q, dB_BHLN, dC_BHLN, dS0t_BHNP = pl.pallas_call(
      functools.partial(_bwd_kernel, chunk=chunk, dtype=x_BHLP.dtype),
      grid=(Bsz, H),
      in_specs=[s["x"], s["v"], s["bc"], s["bc"], s["states"], s["x"], s["state"]],
      out_specs=[s["x"], s["v"], per_head, per_head, s["state"]],
      out_shape=[jax.ShapeDtypeStruct(x_BHLP.shape, x_BHLP.dtype), jax.ShapeDtypeStruct(v_BHC8Q.shape, f32),
                 jax.ShapeDtypeStruct((Bsz, H, L, N), f32), jax.ShapeDtypeStruct((Bsz, H, L, N), f32),
                 jax.ShapeDtypeStruct((Bsz, H, N, P), f32)],
      compiler_params=_PARAMS, interpret=interpret, name="ssd_bwd",
  )(x_BHLP, v_BHC8Q, B_BGLN, C_BGLN, states_BHCNP, dy_BHLP, dfinal_BHNP)
  # Each head's share of dB, dC, summed over the heads of a group.
  group_sum = lambda d_BHLN: d_BHLN.reshape(Bsz, G, H // G, L, N).sum(2)  # noqa: E731
  return dx_BHLP, dv_BHC8Q, group_sum(dB_BHLN), group_sum(dC_BHLN), dS0t_BHNP
