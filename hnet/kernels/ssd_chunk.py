"""One chunk of one head of the SSD scan, forward and backward, on values already in fast memory.

Shared by the TPU and GPU kernels, which differ only in how they walk the chunks. The maths is
`hnet.kernels.ssd_xla`'s chunked form; the state is kept transposed (N, P) so that every product is a
plain or right-transposed matmul. Per-position inputs are five (1, Q) float32 rows, loaded from an
(8, Q) block: dt, the within-chunk cumsum of dt·A (`acs`), the decay to the chunk end (`te`), the
decay of the entering state (`fs`; its last entry is the chunk's carry factor) and the run id.
No value slicing (Triton cannot lower it): rows come from ref loads, scalars from masked sums.

Legend: Q chunk positions (S: source position), P head dim, N state size.
"""
# pylint: disable=invalid-name
import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

f32 = jnp.float32
NT = (((1,), (1,)), ((), ()))  # a · bᵀ
ROWS = 8  # rows of the per-position block: dt, acs, te, fs, run, then padding to a sublane tile
DT, ACS, TE, FS, RUN = range(5)


def _dot(a, b, dtype):
  return jax.lax.dot(a.astype(dtype), b.astype(dtype), preferred_element_type=f32)


def _dot_nt(a, b, dtype):
  return jax.lax.dot_general(a.astype(dtype), b.astype(dtype), NT, preferred_element_type=f32)


def _eye(Q: int) -> jax.Array:
  return jax.lax.broadcasted_iota(jnp.int32, (Q, Q), 0) == jax.lax.broadcasted_iota(jnp.int32, (Q, Q), 1)


def col(row_1Q: jax.Array) -> jax.Array:
  """(1, Q) -> (Q, 1) through the diagonal (a lane reduction; no vector transpose needed)."""
  Q = row_1Q.shape[1]
  return jnp.sum(jnp.where(_eye(Q), jnp.broadcast_to(row_1Q, (Q, Q)), 0.0), axis=1, keepdims=True)


def row(col_Q1: jax.Array) -> jax.Array:
  """(Q, 1) -> (1, Q)."""
  Q = col_Q1.shape[0]
  return jnp.sum(jnp.where(_eye(Q), jnp.broadcast_to(col_Q1, (Q, Q)), 0.0), axis=0, keepdims=True)


def stack_rows(rows_1Q: list[jax.Array]) -> jax.Array:
  """(1, Q) rows into an (8, Q) block, zero below (selects instead of a sublane concatenation)."""
  Q = rows_1Q[0].shape[1]
  index_8Q = jax.lax.broadcasted_iota(jnp.int32, (ROWS, Q), 0)
  return sum(jnp.where(index_8Q == k, jnp.broadcast_to(r, (ROWS, Q)), 0.0) for k, r in enumerate(rows_1Q))


def load_rows(v_ref, *index) -> tuple[jax.Array, ...]:
  """The five (1, Q) rows of the block v_ref[*index] (shape (8, Q))."""
  return tuple(v_ref[index + (pl.ds(k, 1), slice(None))] for k in (DT, ACS, TE, FS, RUN))


def _last(row_1Q: jax.Array) -> jax.Array:
  """row[-1] as a (1, 1) array."""
  Q = row_1Q.shape[1]
  last_1Q = jax.lax.broadcasted_iota(jnp.int32, (1, Q), 1) == Q - 1
  return jnp.sum(jnp.where(last_1Q, row_1Q, 0.0), axis=1, keepdims=True)


def _chunk_terms(x_QP, rows, CB_QS, dtype):
  """Recomputed cheap parts: per-position columns, the decayed scores and X = x·dt."""
  Q = x_QP.shape[0]
  cols = {k: col(r) for k, r in enumerate(rows)}
  causal_QS = jax.lax.broadcasted_iota(jnp.int32, (Q, Q), 0) >= jax.lax.broadcasted_iota(jnp.int32, (Q, Q), 1)
  keep_QS = causal_QS & (cols[RUN] == rows[RUN])
  decay_QS = jnp.exp(jnp.where(keep_QS, cols[ACS] - rows[ACS], -jnp.inf))
  scores_QS = (CB_QS * decay_QS).astype(dtype)
  X_QP = (x_QP.astype(f32) * cols[DT]).astype(dtype)
  return cols, decay_QS, scores_QS, X_QP


def chunk_forward(x_QP, rows, B_QN, C_QN, CB_QS, St_NP, dtype):
  """(y (Q, P) float32, state after the chunk (N, P) float32) from the state entering it, St (N, P)."""
  cols, _, scores_QS, X_QP = _chunk_terms(x_QP, rows, CB_QS, dtype)
  y_QP = _dot(scores_QS, X_QP, dtype) + cols[FS] * _dot(C_QN, St_NP, dtype)
  Xte_QP = X_QP.astype(f32) * cols[TE]
  localT_NP = _dot(B_QN.astype(f32).T, Xte_QP, dtype)
  return y_QP, _last(rows[FS]) * St_NP + localT_NP


def chunk_backward(x_QP, rows, B_QN, C_QN, CB_QS, St_NP, dSt_NP, dy_QP, dtype):
  """Cotangents of one chunk and head, given dSt (N, P): the cotangent of the state after the chunk.

  Returns dx (Q, P), dv (8, Q) rows [Σ_p x·dX, d acs, d te, d fs, 0…], dCB (Q, S) (summed over
  the heads of a group by the caller, then contracted with B and C), the rest of dB and dC (Q, N),
  and the cotangent of the entering state (N, P). All float32.
  """
  Q = x_QP.shape[0]
  cols, decay_QS, scores_QS, X_QP = _chunk_terms(x_QP, rows, CB_QS, dtype)
  x32_QP, dy32_QP = x_QP.astype(f32), dy_QP.astype(f32)
  # Intra-chunk part: y = scores · X.
  dXin_QP = _dot(scores_QS.astype(f32).T, dy_QP, dtype)
  dCB_QS = _dot_nt(dy_QP, X_QP, dtype) * decay_QS
  # d acs = row sums − column sums of dCB ⊙ scores, both taken from the same rounded scores and X, so
  # that they cancel to float32 accuracy in the chunk's reverse cumsum.
  rows_Q1 = jnp.sum(dy32_QP * _dot(scores_QS, X_QP, dtype), axis=1, keepdims=True)
  dacs_Q1 = rows_Q1 - jnp.sum(X_QP.astype(f32) * dXin_QP, axis=1, keepdims=True)
  # Read-out of the entering state: y += fs · C Stᵀᵀ.
  dfs_Q1 = jnp.sum(dy32_QP * _dot(C_QN, St_NP, dtype), axis=1, keepdims=True)
  dyfs_QP = dy32_QP * cols[FS]
  dC_QN = _dot_nt(dyfs_QP, St_NP, dtype)
  dSt_in_NP = _dot(C_QN.astype(f32).T, dyfs_QP, dtype)
  # State after the chunk: fs[-1] · St + Bᵀ (te · X).
  Xte_QP = X_QP.astype(f32) * cols[TE]
  dXe_QP = _dot(B_QN, dSt_NP, dtype)
  dB_QN = _dot_nt(Xte_QP, dSt_NP, dtype)
  dte_Q1 = jnp.sum(X_QP.astype(f32) * dXe_QP, axis=1, keepdims=True)
  dm_11 = jnp.sum(jnp.sum(dSt_NP * St_NP, axis=1, keepdims=True), axis=0, keepdims=True)
  last_Q1 = jax.lax.broadcasted_iota(jnp.int32, (Q, 1), 0) == Q - 1
  dfs_Q1 = dfs_Q1 + jnp.where(last_Q1, dm_11, 0.0)
  dX_QP = dXin_QP + cols[TE] * dXe_QP
  u_Q1 = jnp.sum(x32_QP * dX_QP, axis=1, keepdims=True)
  dv_8Q = stack_rows([row(u_Q1), row(dacs_Q1), row(dte_Q1), row(dfs_Q1)])
  dSt_prev_NP = _last(rows[FS]) * dSt_NP + dSt_in_NP
  return dX_QP * cols[DT], dv_8Q, dCB_QS, dB_QN, dC_QN, dSt_prev_NP
