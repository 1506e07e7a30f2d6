"""Dynamic chunking under static shapes: capacity, downsample (gather), smoothing, upsample.

Legend: L = positions at this stage, M = chunk capacity, D = width.
A boundary marks the first position of a chunk. Boundaries past the M-th are dropped
(latest first), which keeps every position's chunk assignment causal.
"""
# pylint: disable=invalid-name
from typing import NamedTuple

import jax
import jax.numpy as jnp


def document_starts(segment_ids_BL: jax.Array) -> jax.Array:
  """True at the first position of every document (and of the row) that is not padding."""
  prev_BL = jnp.pad(segment_ids_BL[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
  return (segment_ids_BL != prev_BL) & (segment_ids_BL > 0)


def positions_in_document(segment_ids_BL: jax.Array) -> jax.Array:
  """Index of each position within its (contiguous) document; restarts at every segment change."""
  L = segment_ids_BL.shape[1]
  prev_BL = jnp.pad(segment_ids_BL[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
  idx_BL = jnp.broadcast_to(jnp.arange(L), segment_ids_BL.shape)
  start_BL = jax.lax.cummax(jnp.where(segment_ids_BL != prev_BL, idx_BL, 0), axis=1)
  return idx_BL - start_BL


class Chunks(NamedTuple):
  """Where each chunk starts and which chunk each position belongs to."""
  boundary_BL: jax.Array  # bool, boundaries kept after the capacity cut
  chunk_id_BL: jax.Array  # int32, chunk of each position (clamped to >= 0)
  start_BM: jax.Array  # int32, position of each chunk's first element (0 for empty slots)
  valid_BM: jax.Array  # bool, slot holds a real chunk
  segment_ids_BM: jax.Array  # document id per chunk, 0 for empty slots
  overflow_B: jax.Array  # float32, boundaries dropped for capacity, per row
  proposed_B: jax.Array  # float32, boundaries before the capacity cut, per row


def make_chunks(boundary_BL: jax.Array, segment_ids_BL: jax.Array, capacity: int) -> Chunks:
  """Applies forced document starts and the capacity cut, then indexes the chunks."""
  B, L = boundary_BL.shape
  boundary_BL = (boundary_BL & (segment_ids_BL > 0)) | document_starts(segment_ids_BL)
  rank_BL = jnp.cumsum(boundary_BL, axis=1, dtype=jnp.int32)  # 1-based chunk number at boundaries
  kept_BL = boundary_BL & (rank_BL <= capacity)
  chunk_id_BL = jnp.maximum(jnp.cumsum(kept_BL, axis=1, dtype=jnp.int32) - 1, 0)
  # Scatter each kept boundary's position into its chunk slot; dropped ones go out of range.
  slot_BL = jnp.where(kept_BL, chunk_id_BL, capacity)
  rows_B1 = jnp.arange(B)[:, None]
  pos_BL = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L))
  start_BM = jnp.zeros((B, capacity), jnp.int32).at[rows_B1, slot_BL].set(pos_BL, mode="drop")
  count_B = kept_BL.sum(axis=1)
  valid_BM = jnp.arange(capacity)[None, :] < count_B[:, None]
  segment_ids_BM = jnp.where(valid_BM, jnp.take_along_axis(segment_ids_BL, start_BM, axis=1), 0)
  proposed_B = boundary_BL.sum(axis=1).astype(jnp.float32)
  return Chunks(kept_BL, chunk_id_BL, start_BM, valid_BM, segment_ids_BM,
                proposed_B - count_B.astype(jnp.float32), proposed_B)


def downsample(x_BLD: jax.Array, chunks: Chunks) -> jax.Array:
  """Gathers each chunk's first position: (B, M, D); empty slots are zeros."""
  x_BMD = jnp.take_along_axis(x_BLD, chunks.start_BM[:, :, None], axis=1)
  return jnp.where(chunks.valid_BM[:, :, None], x_BMD, jnp.zeros_like(x_BMD))


def upsample(z_BMD: jax.Array, chunks: Chunks) -> jax.Array:
  """Every position reads the output of the chunk it belongs to: (B, L, D)."""
  return jnp.take_along_axis(z_BMD, chunks.chunk_id_BL[:, :, None], axis=1)


def linear_recurrence(a_BM: jax.Array, u_BMD: jax.Array) -> jax.Array:
  """h_j = a_j * h_{j-1} + u_j with h_{-1} = 0, by a log-depth associative scan."""
  def combine(left, right):
    a_l, u_l = left
    a_r, u_r = right
    return a_r * a_l, a_r[..., None] * u_l + u_r

  _, h_BMD = jax.lax.associative_scan(combine, (a_BM, u_BMD), axis=1)
  return h_BMD


def smooth(z_BMD: jax.Array, prob_BM: jax.Array, chunks: Chunks) -> jax.Array:
  """H-Net's smoothing: EMA over chunks z̄_j = P_j ẑ_j + (1 - P_j) z̄_{j-1}, reset at documents.

  P_j is the boundary probability at the chunk's first position, clamped to [1e-4, 1-1e-4].
  Float32 throughout.
  """
  p_BM = jnp.clip(prob_BM.astype(jnp.float32), 1e-4, 1 - 1e-4)
  prev_seg_BM = jnp.pad(chunks.segment_ids_BM[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
  keep_BM = jnp.where(chunks.segment_ids_BM != prev_seg_BM, 0.0, 1.0 - p_BM)
  return linear_recurrence(keep_BM, p_BM[:, :, None] * z_BMD.astype(jnp.float32))
