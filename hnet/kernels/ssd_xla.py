"""Mamba2's SSD scan: a sequential reference and the chunked matmul form, with document resets.

Per head h, with state S (P×N):  S_t = exp(dt_t A_h) S_{t-1} + dt_t x_t B_tᵀ,  y_t = S_t C_t.
Head h reads group h // (H/G) of B and C. The state is zeroed wherever `segment_ids` changes,
so a packed row gives the same outputs as its documents run one by one. No D skip here.

Legend: R heads per group (H/G); T chunk boundaries (C+1: the initial state, then each chunk end);
S (inside the chunked form) the source position within a chunk, Q the target position.
"""
# pylint: disable=invalid-name
from typing import NamedTuple

import jax
import jax.numpy as jnp

f32 = jnp.float32


def run_ids(segment_ids_BL: jax.Array | None, B: int, L: int) -> jax.Array:
  """Run index per position: +1 at every segment change, 0 at position 0 (which continues the initial state)."""
  if segment_ids_BL is None:
    return jnp.zeros((B, L), jnp.int32)
  change_BL = jnp.concatenate(
      [jnp.zeros((B, 1), bool), segment_ids_BL[:, 1:] != segment_ids_BL[:, :-1]], axis=1)
  return jnp.cumsum(change_BL, axis=1, dtype=jnp.int32)


def check_shapes(x_BLHP, dt_BLH, A_H, B_BLGN, C_BLGN):
  B, L, H, P = x_BLHP.shape
  G, N = B_BLGN.shape[2:]
  if dt_BLH.shape != (B, L, H) or A_H.shape != (H,):
    raise ValueError(f"ssd: dt {dt_BLH.shape} / A {A_H.shape} do not match x {x_BLHP.shape}")
  if B_BLGN.shape != (B, L, G, N) or C_BLGN.shape != (B, L, G, N):
    raise ValueError(f"ssd: B {B_BLGN.shape} and C {C_BLGN.shape} must both be (B, L, G, N) = {(B, L, G, N)}")
  if H % G:
    raise ValueError(f"ssd: {H} heads are not divisible by {G} groups")
  return B, L, H, P, G, N


def ssd_naive(x_BLHP: jax.Array, dt_BLH: jax.Array, A_H: jax.Array, B_BLGN: jax.Array, C_BLGN: jax.Array,
              *, segment_ids_BL: jax.Array | None = None,
              initial_state_BHPN: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Sequential reference: one `lax.scan` step per position, in float32. Returns (y in x's dtype, final state)."""
  B, L, H, P, G, N = check_shapes(x_BLHP, dt_BLH, A_H, B_BLGN, C_BLGN)
  R = H // G
  if initial_state_BHPN is None:
    initial_state_BHPN = jnp.zeros((B, H, P, N), f32)
  run_BL = run_ids(segment_ids_BL, B, L)
  reset_BL = run_BL != jnp.concatenate([run_BL[:, :1], run_BL[:, :-1]], axis=1)

  def step(S_BHPN, inp):
    x_BHP, dt_BH, B_BGN, C_BGN, reset_B = inp
    B_BHN = jnp.repeat(B_BGN, R, axis=1)
    C_BHN = jnp.repeat(C_BGN, R, axis=1)
    S_BHPN = jnp.where(reset_B[:, None, None, None], 0.0, S_BHPN * jnp.exp(dt_BH * A_H[None])[:, :, None, None])
    S_BHPN = S_BHPN + (dt_BH[:, :, None] * x_BHP)[:, :, :, None] * B_BHN[:, :, None, :]
    return S_BHPN, jnp.einsum("bhpn,bhn->bhp", S_BHPN, C_BHN)

  xs = (x_BLHP.astype(f32), dt_BLH.astype(f32), B_BLGN.astype(f32), C_BLGN.astype(f32), reset_BL)
  xs = jax.tree.map(lambda a: jnp.moveaxis(a, 1, 0), xs)  # scan over L
  final_BHPN, y_LBHP = jax.lax.scan(step, initial_state_BHPN.astype(f32), xs)
  return jnp.moveaxis(y_LBHP, 0, 1).astype(x_BLHP.dtype), final_BHPN


def _decay_matrix(a_XT: jax.Array, keep_XTT: jax.Array) -> jax.Array:
  """exp(Σ_{k=j+1..i} a_k) at [i, j] where `keep` (causal and same run), else 0; leading axes X batch.

  The sums come from a cumsum of entries masked *before* summing, so no difference of two large
  cumulative sums is taken; masked entries never reach `exp` (no inf, no NaN gradients).
  """
  T = a_XT.shape[-1]
  below_TT = jnp.arange(T)[:, None] > jnp.arange(T)[None, :]
  lead = (1,) * (a_XT.ndim - 1)
  a_XTT = jnp.where(below_TT.reshape(lead + (T, T)), a_XT[..., :, None], 0.0)  # row i: a_i left of the diagonal
  segsum_XTT = jnp.cumsum(a_XTT, axis=-2)
  return jnp.where(keep_XTT, jnp.exp(jnp.where(keep_XTT, segsum_XTT, 0.0)), 0.0)


class _Chunked(NamedTuple):
  """The cheap parts of the chunked form, computed in the forward and recomputed in the backward."""
  X_BCQGRP: jax.Array  # x · dt in x's dtype
  acs_BCHQ: jax.Array  # within-chunk cumulative sums of dt · A, float32
  CB_BCGQS: jax.Array  # C_q · B_s, float32
  keep_BCQS: jax.Array  # causal and same run
  to_end_BCQH: jax.Array  # decay from position s to the chunk's end, 0 across a reset
  from_start_BCQH: jax.Array  # decay of the entering state to position q, 0 after a reset
  carry_BHTT: jax.Array  # boundary-to-boundary decays across whole chunks (T = C + 1)


def _prepare(x_BCQHP, dt_BCQH, A_H, B_BCQGN, C_BCQGN, run_BCQ) -> _Chunked:
  B, C, Q, H, P = x_BCQHP.shape
  G = B_BCQGN.shape[3]
  dtype = x_BCQHP.dtype
  dt_BCQH = dt_BCQH.astype(f32)
  X_BCQGRP = (x_BCQHP.astype(f32) * dt_BCQH[..., None]).astype(dtype).reshape(B, C, Q, G, H // G, P)
  acs_BCHQ = jnp.cumsum((dt_BCQH * A_H.astype(f32)[None, None, None]).transpose(0, 1, 3, 2), axis=-1)
  CB_BCGQS = jnp.einsum("bcqgn,bcsgn->bcgqs", C_BCQGN.astype(dtype), B_BCQGN.astype(dtype),
                        preferred_element_type=f32)
  causal_QS = jnp.arange(Q)[:, None] >= jnp.arange(Q)[None, :]
  keep_BCQS = causal_QS[None, None] & (run_BCQ[:, :, :, None] == run_BCQ[:, :, None, :])
  acs_BCQH = acs_BCHQ.transpose(0, 1, 3, 2)
  run_end_BC1 = run_BCQ[:, :, -1:]
  to_end_BCQH = jnp.exp(jnp.where((run_BCQ == run_end_BC1)[..., None], acs_BCQH[:, :, -1:] - acs_BCQH, -jnp.inf))
  run_enter_BC1 = jnp.pad(run_end_BC1[:, :-1], [(0, 0), (1, 0), (0, 0)])  # the initial state belongs to run 0
  from_start_BCQH = jnp.exp(jnp.where((run_BCQ == run_enter_BC1)[..., None], acs_BCQH, -jnp.inf))
  # Boundary t: 0 = initial state, t = end of chunk t-1; a reset inside a chunk cuts the carry (run ids differ).
  chunk_a_BHT = jnp.pad(acs_BCHQ[..., -1].transpose(0, 2, 1), [(0, 0), (0, 0), (1, 0)])
  run_end_BT = jnp.pad(run_BCQ[:, :, -1], [(0, 0), (1, 0)])
  keep_BTT = jnp.tril(jnp.ones((C + 1, C + 1), bool))[None] & (run_end_BT[:, :, None] == run_end_BT[:, None, :])
  carry_BHTT = _decay_matrix(chunk_a_BHT, keep_BTT[:, None])
  return _Chunked(X_BCQGRP, acs_BCHQ, CB_BCGQS, keep_BCQS, to_end_BCQH, from_start_BCQH, carry_BHTT)


def _decay(k: _Chunked) -> jax.Array:
  """exp(Σ_{s<j≤q} a_j) at [q, s] where kept, else 0, as (B, C, G, R, Q, S): one difference of within-chunk sums.

  Kept entries have q ≥ s and a ≤ 0, so the exponent is ≤ 0; masked ones become exp(-inf) = 0. Its float32
  rounding (about 1e-7 of the chunk's |Σ a|) is far below that of bf16 scores. Elementwise from small
  inputs, so XLA fuses it into the matmul that consumes it instead of writing it out.
  """
  B, C, _, G, R, _ = k.X_BCQGRP.shape
  Q = k.acs_BCHQ.shape[-1]
  diff_BCHQS = k.acs_BCHQ[..., :, None] - k.acs_BCHQ[..., None, :]
  return jnp.exp(jnp.where(k.keep_BCQS[:, :, None], diff_BCHQS, -jnp.inf)).reshape(B, C, G, R, Q, Q)


def _ssd_forward(x_BCQHP, dt_BCQH, A_H, B_BCQGN, C_BCQGN, S0_BHPN, run_BCQ):
  """(y, y in float32, states at every chunk boundary (B, C+1, H, P, N) float32)."""
  B, C, Q, H, P = x_BCQHP.shape
  G, N = B_BCQGN.shape[3:]
  R = H // G
  dtype = x_BCQHP.dtype
  k = _prepare(x_BCQHP, dt_BCQH, A_H, B_BCQGN, C_BCQGN, run_BCQ)
  B_BCQGN, C_BCQGN = B_BCQGN.astype(dtype), C_BCQGN.astype(dtype)

  # 1. Intra-chunk: y_q = Σ_{s≤q, same run} (C_q·B_s) exp(Σ_{s<j≤q} a_j) X_s.
  scores_BCGRQS = (k.CB_BCGQS[:, :, :, None] * _decay(k)).astype(dtype)
  y_BCQGRP = jnp.einsum("bcgrqs,bcsgrp->bcqgrp", scores_BCGRQS, k.X_BCQGRP, preferred_element_type=f32)

  # 2. Each chunk's own end state, then the states at every boundary from the chunk-level recurrence.
  Xend_BCQGRP = (k.X_BCQGRP.astype(f32) * k.to_end_BCQH.reshape(B, C, Q, G, R, 1)).astype(dtype)
  local_BCGRPN = jnp.einsum("bcsgrp,bcsgn->bcgrpn", Xend_BCQGRP, B_BCQGN, preferred_element_type=f32)
  local_BTHPN = jnp.concatenate([S0_BHPN.astype(f32)[:, None], local_BCGRPN.reshape(B, C, H, P, N)], axis=1)
  state_BTHPN = jnp.einsum("bhzt,bthpn->bzhpn", k.carry_BHTT, local_BTHPN, preferred_element_type=f32)

  # 3. The state entering each chunk, read out by C and decayed from the chunk start.
  enter_BCGRPN = state_BTHPN[:, :-1].reshape(B, C, G, R, P, N).astype(dtype)
  y_off_BCQGRP = jnp.einsum("bcqgn,bcgrpn->bcqgrp", C_BCQGN, enter_BCGRPN, preferred_element_type=f32)
  y_BCQHP = (y_BCQGRP + y_off_BCQGRP * k.from_start_BCQH.reshape(B, C, Q, G, R, 1)).reshape(B, C, Q, H, P)
  return jax.lax.optimization_barrier(y_BCQHP.astype(dtype)), y_BCQHP, state_BTHPN


@jax.custom_vjp
def _ssd_core(x_BCQHP, dt_BCQH, A_H, B_BCQGN, C_BCQGN, S0_BHPN, run_BCQ):
  y_BCQHP, _, state_BTHPN = _ssd_forward(x_BCQHP, dt_BCQH, A_H, B_BCQGN, C_BCQGN, S0_BHPN, run_BCQ)
  return y_BCQHP, state_BTHPN[:, -1]


def _ssd_core_fwd(x_BCQHP, dt_BCQH, A_H, B_BCQGN, C_BCQGN, S0_BHPN, run_BCQ):
  y_BCQHP, y32_BCQHP, state_BTHPN = _ssd_forward(x_BCQHP, dt_BCQH, A_H, B_BCQGN, C_BCQGN, S0_BHPN, run_BCQ)
  # Kept: the inputs, y before rounding and the boundary states; every (B, C, H, Q, Q) tensor is recomputed.
  res = (x_BCQHP, dt_BCQH, A_H, B_BCQGN, C_BCQGN, S0_BHPN, run_BCQ, y32_BCQHP, state_BTHPN)
  return (y_BCQHP, state_BTHPN[:, -1]), res


def _ssd_core_bwd(res, cotangents):
  """Hand-written backward.

  Every decay is exp(acs_q − acs_s) and scales a product it enters, so the cotangent of the
  within-chunk cumsum at t is (row terms) Σ_p dy_t y_t − (column terms) Σ_p X_t dX_t, plus, at a
  chunk's last position, the end-of-chunk terms. No Q×Q reduction is needed. Row and column terms
  come from the same rounded scores and X (y kept in float32), so their totals cancel to float32
  accuracy in the reverse cumsum; with y rounded to bf16 they would not.
  """
  x_BCQHP, dt_BCQH, A_H, B_in, C_in, S0_BHPN, run_BCQ, y32_BCQHP, state_BTHPN = res
  dy_BCQHP, dfinal_BHPN = cotangents
  B, C, Q, H, P = x_BCQHP.shape
  G, N = B_in.shape[3:]
  R = H // G
  dtype = x_BCQHP.dtype
  k = _prepare(x_BCQHP, dt_BCQH, A_H, B_in, C_in, run_BCQ)
  B_BCQGN, C_BCQGN = B_in.astype(dtype), C_in.astype(dtype)
  dy_BCQGRP = dy_BCQHP.astype(dtype).reshape(B, C, Q, G, R, P)

  # 3. Read-out of the entering states E: y_off = fs ⊙ (C · Eᵀ).
  enter_BCGRPN = state_BTHPN[:, :-1].reshape(B, C, G, R, P, N).astype(dtype)
  dyfs_BCQGRP = (dy_BCQGRP.astype(f32) * k.from_start_BCQH.reshape(B, C, Q, G, R, 1)).astype(dtype)
  denter_BCGRPN = jnp.einsum("bcqgrp,bcqgn->bcgrpn", dyfs_BCQGRP, C_BCQGN, preferred_element_type=f32)
  dC_BCQGN = jnp.einsum("bcqgrp,bcgrpn->bcqgn", dyfs_BCQGRP, enter_BCGRPN, preferred_element_type=f32)

  # 2. Chunk-level recurrence S_{t+1} = m_t S_t + local_t: the total cotangent of each boundary state is
  # carryᵀ · (direct cotangents), and that of local_t is the one of S_{t+1}.
  dstate_BTHPN = jnp.concatenate([denter_BCGRPN.reshape(B, C, H, P, N), dfinal_BHPN.astype(f32)[:, None]], axis=1)
  Gbar_BTHPN = jnp.einsum("bhzt,bzhpn->bthpn", k.carry_BHTT, dstate_BTHPN, preferred_element_type=f32)
  dS0_BHPN, dlocal_BCHPN = Gbar_BTHPN[:, 0], Gbar_BTHPN[:, 1:]
  m_BCH = jnp.diagonal(k.carry_BHTT, offset=-1, axis1=-2, axis2=-1).transpose(0, 2, 1)
  dchunk_a_BCH = m_BCH * jnp.einsum("bchpn,bchpn->bch", dlocal_BCHPN, state_BTHPN[:, :-1])
  dlocal_BCGRPN = dlocal_BCHPN.reshape(B, C, G, R, P, N).astype(dtype)

  # 2'. Chunk end states: local = Σ_s te_s X_sᵀ B_s.
  te_BCQGR1 = k.to_end_BCQH.reshape(B, C, Q, G, R, 1)
  Xend_BCQGRP = (k.X_BCQGRP.astype(f32) * te_BCQGR1).astype(dtype)
  dB_BCQGN = jnp.einsum("bcsgrp,bcgrpn->bcsgn", Xend_BCQGRP, dlocal_BCGRPN, preferred_element_type=f32)
  dXe_BCQGRP = jnp.einsum("bcsgn,bcgrpn->bcsgrp", B_BCQGN, dlocal_BCGRPN, preferred_element_type=f32)

  # 1. Intra-chunk: dX = scoresᵀ dy; dP = (dy Xᵀ) ⊙ decay is the one (B, C, H, Q, Q) tensor written out.
  decay_BCGRQS = _decay(k)
  scores_BCGRQS = (k.CB_BCGQS[:, :, :, None] * decay_BCGRQS).astype(dtype)
  dXin_BCQGRP = jnp.einsum("bcgrqs,bcqgrp->bcsgrp", scores_BCGRQS, dy_BCQGRP, preferred_element_type=f32)
  dX_BCQGRP = dXin_BCQGRP + dXe_BCQGRP * te_BCQGR1
  dP_BCGRQS = (jnp.einsum("bcqgrp,bcsgrp->bcgrqs", dy_BCQGRP, k.X_BCQGRP, preferred_element_type=f32)
               * decay_BCGRQS).astype(dtype)
  dCB_BCGQS = jnp.sum(dP_BCGRQS.astype(f32), axis=3).astype(dtype)
  dC_BCQGN = dC_BCQGN + jnp.einsum("bcgqs,bcsgn->bcqgn", dCB_BCGQS, B_BCQGN, preferred_element_type=f32)
  dB_BCQGN = dB_BCQGN + jnp.einsum("bcgqs,bcqgn->bcsgn", dCB_BCGQS, C_BCQGN, preferred_element_type=f32)

  # acs = cumsum(dt · A) within the chunk and X = x · dt.
  dt_f32 = dt_BCQH.astype(f32)
  dX_BCQHP = dX_BCQGRP.reshape(B, C, Q, H, P)
  u_BCQH = jnp.sum(dX_BCQHP * x_BCQHP.astype(f32), axis=-1)  # Σ_p x dX: the cotangent of dt through X
  X32_BCQGRP = k.X_BCQGRP.astype(f32)
  rows_BCQH = jnp.sum(dy_BCQHP.astype(f32) * y32_BCQHP, axis=-1)
  cols_BCQH = jnp.sum(X32_BCQGRP * dXin_BCQGRP, axis=-1).reshape(B, C, Q, H)
  te_cols_BCQH = jnp.sum(X32_BCQGRP * dXe_BCQGRP * te_BCQGR1, axis=-1).reshape(B, C, Q, H)
  dend_BCH = dchunk_a_BCH + jnp.sum(te_cols_BCQH, axis=2)
  dacs_BCQH = (rows_BCQH - cols_BCQH - te_cols_BCQH).at[:, :, -1].add(dend_BCH)
  da_BCQH = jnp.flip(jnp.cumsum(jnp.flip(dacs_BCQH, 2), axis=2), 2)
  ddt_BCQH = u_BCQH + da_BCQH * A_H.astype(f32)[None, None, None]
  dA_H = jnp.sum(da_BCQH * dt_f32, axis=(0, 1, 2))
  dx_BCQHP = jax.lax.optimization_barrier((dX_BCQHP * dt_f32[..., None]).astype(x_BCQHP.dtype))
  return (dx_BCQHP, ddt_BCQH.astype(dt_BCQH.dtype), dA_H.astype(A_H.dtype),
          dB_BCQGN.astype(B_in.dtype), dC_BCQGN.astype(C_in.dtype), dS0_BHPN.astype(S0_BHPN.dtype), None)


_ssd_core.defvjp(_ssd_core_fwd, _ssd_core_bwd)


def ssd_chunked(x_BLHP: jax.Array, dt_BLH: jax.Array, A_H: jax.Array, B_BLGN: jax.Array, C_BLGN: jax.Array,
                *, chunk_size: int, segment_ids_BL: jax.Array | None = None,
                initial_state_BHPN: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Chunked SSD (same maths as `ssd_naive`): intra-chunk quadratic part plus a pass over chunk states.

  Decays are float32; matmuls take the input dtype and accumulate in float32. Returns (y in x's
  dtype, final float32 state). The backward is written out (`jax.custom_vjp`) and recomputes the
  (B, C, H, Q, Q) decays and scores instead of storing them.
  """
  B, L, H, P, G, N = check_shapes(x_BLHP, dt_BLH, A_H, B_BLGN, C_BLGN)
  if chunk_size < 1:
    raise ValueError(f"ssd: chunk_size must be positive, got {chunk_size}")
  Q = chunk_size
  C = -(-L // Q)
  pad = C * Q - L
  if initial_state_BHPN is None:
    initial_state_BHPN = jnp.zeros((B, H, P, N), f32)
  # Padding at the end: dt = 0 (decay 1, no input) and the last run continues, so the final state is unchanged.
  run_BCQ = jnp.pad(run_ids(segment_ids_BL, B, L), [(0, 0), (0, pad)], mode="edge").reshape(B, C, Q)
  chunk = lambda v: jnp.pad(v, [(0, 0), (0, pad)] + [(0, 0)] * (v.ndim - 2)).reshape((B, C, Q) + v.shape[2:])
  y_BCQHP, final_BHPN = _ssd_core(chunk(x_BLHP), chunk(dt_BLH.astype(f32)), A_H, chunk(B_BLGN), chunk(C_BLGN),
                                  initial_state_BHPN.astype(f32), run_BCQ)
  return y_BCQHP.reshape(B, C * Q, H, P)[:, :L], final_BHPN
