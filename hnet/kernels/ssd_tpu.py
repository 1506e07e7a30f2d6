"""The SSD scan as Pallas TPU (Mosaic) kernels, forward and backward.

Grid (batch, head block, chunk); the chunk axis is sequential ("arbitrary") and carries the state of
the block's heads in VMEM scratch, so one pass over x, B and C gives the outputs, the chunk-entering
states (kept for the backward) and the final state. The backward walks the chunks in reverse with
the state cotangent in scratch. One step handles `heads_per_step` heads of one group, so B, C and
C·Bᵀ are loaded and formed once for all of them.

Block shapes follow the TPU tiling rule (last two dims multiples of (8, 128) or whole): Q is a
multiple of 16, P and N and the (8, Q) rows are whole. Inputs are head-major:
x (B, H, L, P), per-position rows v (B, H, C, 8, Q), B and C (B, G, L, N), states transposed (N, P).
"""
# pylint: disable=invalid-name
import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from hnet.kernels.ssd_chunk import NT, ROWS, chunk_backward, chunk_forward, load_rows

f32 = jnp.float32
_ = pl.squeezed  # a block dim the kernel does not see
_SEMANTICS = pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "arbitrary"))


def heads_per_step(R: int) -> int:
  """Heads of one group per grid step: up to 8, dividing the group's R heads."""
  return math.gcd(R, 8)


def _specs(H, Hb, R, Q, P, N):
  """Block specs on grid (b, head block h, chunk c) for the arrays both kernels read."""
  head = lambda b, h, c: (b, h, c, 0)  # noqa: E731
  return dict(
      x=pl.BlockSpec((_, Hb, Q, P), head),
      v=pl.BlockSpec((_, Hb, _, ROWS, Q), lambda b, h, c: (b, h, c, 0, 0)),
      bc=pl.BlockSpec((_, _, Q, N), lambda b, h, c: (b, jax.lax.div(h, R // Hb), c, 0)),  # lax.div: no sign fix-up
      state=pl.BlockSpec((_, Hb, N, P), lambda b, h, c: (b, h, 0, 0)),
      states=pl.BlockSpec((_, Hb, _, N, P), lambda b, h, c: (b, h, c, 0, 0)),
  )


def _reverse(spec: pl.BlockSpec, C: int) -> pl.BlockSpec:
  """The same blocks with the chunk index counted from the end."""
  return pl.BlockSpec(spec.block_shape, lambda b, h, c: spec.index_map(b, h, C - 1 - c))


def _fwd_kernel(x_ref, v_ref, b_ref, c_ref, s0_ref, y_ref, states_ref, final_ref, s_scr, *, dtype):
  c = pl.program_id(2)

  @pl.when(c == 0)
  def _():
    s_scr[...] = s0_ref[...]

  B_QN, C_QN = b_ref[...], c_ref[...]
  CB_QS = jax.lax.dot_general(C_QN, B_QN, NT, preferred_element_type=f32)
  for j in range(x_ref.shape[0]):
    St_NP = s_scr[j]
    states_ref[j] = St_NP
    y_QP, s_scr[j] = chunk_forward(x_ref[j], load_rows(v_ref, j), B_QN, C_QN, CB_QS, St_NP, dtype)
    y_ref[j] = y_QP.astype(y_ref.dtype)

  @pl.when(c == pl.num_programs(2) - 1)
  def _():
    final_ref[...] = s_scr[...]


def forward(x_BHLP, v_BHC8Q, B_BGLN, C_BGLN, S0t_BHNP, *, chunk: int, interpret: bool = False):
  """(y (B, H, L, P), chunk-entering states (B, H, C, N, P) float32, final state (B, H, N, P) float32)."""
  Bsz, H, L, P = x_BHLP.shape
  G, N = B_BGLN.shape[1], B_BGLN.shape[3]
  Q, Hb, C = chunk, heads_per_step(H // G), L // chunk
  s = _specs(H, Hb, H // G, Q, P, N)
  return pl.pallas_call(
      functools.partial(_fwd_kernel, dtype=x_BHLP.dtype),
      grid=(Bsz, H // Hb, C),
      in_specs=[s["x"], s["v"], s["bc"], s["bc"], s["state"]],
      out_specs=[s["x"], s["states"], s["state"]],
      out_shape=[jax.ShapeDtypeStruct(x_BHLP.shape, x_BHLP.dtype),
                 jax.ShapeDtypeStruct((Bsz, H, C, N, P), f32), jax.ShapeDtypeStruct((Bsz, H, N, P), f32)],
      scratch_shapes=[pltpu.VMEM((Hb, N, P), f32)],
      compiler_params=_SEMANTICS, interpret=interpret, name="ssd_fwd",
  )(x_BHLP, v_BHC8Q, B_BGLN, C_BGLN, S0t_BHNP)


def _bwd_kernel(x_ref, v_ref, b_ref, c_ref, states_ref, dy_ref, dfinal_ref,
                dx_ref, dv_ref, db_ref, dc_ref, ds0_ref, ds_scr, *, dtype):
  i = pl.program_id(2)  # chunk C-1-i

  @pl.when(i == 0)
  def _():
    ds_scr[...] = dfinal_ref[...]

  B_QN, C_QN = b_ref[...], c_ref[...]
  CB_QS = jax.lax.dot_general(C_QN, B_QN, NT, preferred_element_type=f32)
  dCB_QS = jnp.zeros(CB_QS.shape, f32)
  dB_QN = jnp.zeros(B_QN.shape, f32)
  dC_QN = jnp.zeros(C_QN.shape, f32)
  for j in range(x_ref.shape[0]):
    dx_QP, dv_ref[j], dCB_j, dB_j, dC_j, ds_scr[j] = chunk_backward(
        x_ref[j], load_rows(v_ref, j), B_QN, C_QN, CB_QS, states_ref[j], ds_scr[j], dy_ref[j], dtype)
    dx_ref[j] = dx_QP.astype(dx_ref.dtype)
    dCB_QS, dB_QN, dC_QN = dCB_QS + dCB_j, dB_QN + dB_j, dC_QN + dC_j
  # C·Bᵀ is shared by the heads: its cotangent is summed first, then contracted once.
  dc_ref[...] = dC_QN + jax.lax.dot(dCB_QS.astype(dtype), B_QN.astype(dtype), preferred_element_type=f32)
  db_ref[...] = dB_QN + jax.lax.dot(dCB_QS.T.astype(dtype), C_QN.astype(dtype), preferred_element_type=f32)

  @pl.when(i == pl.num_programs(2) - 1)
  def _():
    ds0_ref[...] = ds_scr[...]


def backward(x_BHLP, v_BHC8Q, B_BGLN, C_BGLN, states_BHCNP, dy_BHLP, dfinal_BHNP, *, chunk: int,
             interpret: bool = False):
  """(dx, dv (B, H, C, 8, Q), dB, dC (B, G, L, N), d initial state (B, H, N, P)), float32 except dx."""
  Bsz, H, L, P = x_BHLP.shape
  G, N = B_BGLN.shape[1], B_BGLN.shape[3]
  Q, Hb, C = chunk, heads_per_step(H // G), L // chunk
  s = {k: _reverse(v, C) for k, v in _specs(H, Hb, H // G, Q, P, N).items()}
  part = pl.BlockSpec((_, _, Q, N), lambda b, h, c: (b, h, C - 1 - c, 0))
  dx_BHLP, dv_BHC8Q, dB_BKLN, dC_BKLN, dS0t_BHNP = pl.pallas_call(
      functools.partial(_bwd_kernel, dtype=x_BHLP.dtype),
      grid=(Bsz, H // Hb, C),
      in_specs=[s["x"], s["v"], s["bc"], s["bc"], s["states"], s["x"], s["state"]],
      out_specs=[s["x"], s["v"], part, part, s["state"]],
      out_shape=[jax.ShapeDtypeStruct(x_BHLP.shape, x_BHLP.dtype), jax.ShapeDtypeStruct(v_BHC8Q.shape, f32),
                 jax.ShapeDtypeStruct((Bsz, H // Hb, L, N), f32), jax.ShapeDtypeStruct((Bsz, H // Hb, L, N), f32),
                 jax.ShapeDtypeStruct((Bsz, H, N, P), f32)],
      scratch_shapes=[pltpu.VMEM((Hb, N, P), f32)],
      compiler_params=_SEMANTICS, interpret=interpret, name="ssd_bwd",
  )(x_BHLP, v_BHC8Q, B_BGLN, C_BGLN, states_BHCNP, dy_BHLP, dfinal_BHNP)
  # Each head block's share of dB, dC, summed over the blocks of a group.
  group_sum = lambda d_BKLN: d_BKLN.reshape(Bsz, G, -1, L, N).sum(2)  # noqa: E731
  return dx_BHLP, dv_BHC8Q, group_sum(dB_BKLN), group_sum(dC_BKLN), dS0t_BHNP
