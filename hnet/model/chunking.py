"""Dynamic chunking under static shapes: capacity, downsample (gather), smoothing, upsample.

Legend: L = positions at this stage, M = chunk capacity, D = width, R = runs (documents and
padding stretches; at most L, so R-indexed arrays are L long).
A boundary marks the first position of a chunk. Every packed document has its own chunk
budget (a function of its length only); boundaries past it are dropped (latest first), which
keeps chunk assignments causal and documents independent of each other.
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
  """Where each chunk starts, which chunk each position reads, and the next stage's document layout."""
  boundary_BL: jax.Array  # bool, boundaries kept after the budget cut
  chunk_id_BL: jax.Array  # int32, slot of the chunk each position reads (0 where it reads none)
  has_chunk_BL: jax.Array  # bool, the position's document got its first chunk (else it reads zeros)
  start_BM: jax.Array  # int32, position of each chunk's first element (0 for empty slots)
  valid_BM: jax.Array  # bool, slot holds a real chunk
  segment_ids_BM: jax.Array  # document id per chunk, 0 for empty slots
  owner_BM: jax.Array  # document whose budget each slot belongs to (used or not), 0 for none
  overflow_B: jax.Array  # float32, proposed boundaries dropped (own budget or row capacity), per row
  row_overflow_B: jax.Array  # float32, of those, dropped only because the row's capacity ran out
  proposed_B: jax.Array  # float32, boundaries before the cut, per row


def _runs(owner_BL: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Runs (maximal stretches of one owner): start flags, run index per position, length per run (B, L)."""
  B, L = owner_BL.shape
  start_BL = owner_BL != jnp.pad(owner_BL[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
  run_BL = jnp.cumsum(start_BL, axis=1, dtype=jnp.int32) - 1
  length_BR = jnp.zeros((B, L), jnp.int32).at[jnp.arange(B)[:, None], run_BL].add(1)
  return start_BL, run_BL, length_BR


def make_chunks(boundary_BL: jax.Array, segment_ids_BL: jax.Array, capacity: int, budget_fn,
                owner_ids_BL: jax.Array | None = None) -> Chunks:
  """Applies forced document starts and per-document budgets, then indexes the chunks.

  Document d (a run of `owner_ids_BL`, by default the segment ids) owns `budget_fn(n_d)` slots, n_d
  being its length at this stage; its slots follow those of the documents before it. Its k-th
  boundary takes its k-th slot, and boundaries past its budget, or past the row's `capacity`, are
  dropped (latest first: causal). Budgets depend on lengths only, so a document's chunks never
  depend on the bytes of another. Only when the budgets of a row's documents add up to more than
  the capacity (many short documents) do the last ones lose slots (`row_overflow_B`, the one case in
  which a document depends on the others' lengths); a document whose first slot lies past the
  capacity gets no chunk and its positions read zeros. `owner_ids_BL` of an inner stage is the outer `owner_BM`: a
  document's length there is its budget, not its content-dependent chunk count (causality).
  """
  B, L = boundary_BL.shape
  rows_B1 = jnp.arange(B)[:, None]
  owner_BL = segment_ids_BL if owner_ids_BL is None else owner_ids_BL
  valid_BL = segment_ids_BL > 0
  boundary_BL = (boundary_BL & valid_BL) | document_starts(segment_ids_BL)

  run_start_BL, run_BL, length_BR = _runs(owner_BL)
  run_owner_BR = jnp.zeros((B, L), owner_BL.dtype).at[rows_B1, run_BL].max(owner_BL)
  budget_BR = jnp.where(run_owner_BR > 0, budget_fn(length_BR), 0).astype(jnp.int32)
  offset_BR = jnp.cumsum(budget_BR, axis=1, dtype=jnp.int32) - budget_BR  # first slot of each document
  budget_BL = jnp.take_along_axis(budget_BR, run_BL, axis=1)
  offset_BL = jnp.take_along_axis(offset_BR, run_BL, axis=1)

  # Rank of each boundary within its document (1-based), then its slot.
  count_BL = jnp.cumsum(boundary_BL, axis=1, dtype=jnp.int32)
  before_BL = jax.lax.cummax(jnp.where(run_start_BL, count_BL - boundary_BL, 0), axis=1)
  rank_BL = count_BL - before_BL
  slot_BL = offset_BL + rank_BL - 1
  in_budget_BL = boundary_BL & (rank_BL <= budget_BL)
  kept_BL = in_budget_BL & (slot_BL < capacity)

  pos_BL = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L))
  target_BL = jnp.where(kept_BL, slot_BL, capacity)  # dropped ones scatter out of range
  start_BM = jnp.zeros((B, capacity), jnp.int32).at[rows_B1, target_BL].set(pos_BL, mode="drop")
  valid_BM = jnp.zeros((B, capacity), bool).at[rows_B1, target_BL].set(True, mode="drop")
  segment_ids_BM = jnp.where(valid_BM, jnp.take_along_axis(segment_ids_BL, start_BM, axis=1), 0)

  # Each position reads the latest kept chunk at or before it, if that chunk is its document's.
  latest_BL = jax.lax.cummax(jnp.where(kept_BL, slot_BL, -1), axis=1)
  has_chunk_BL = (latest_BL >= offset_BL) & valid_BL
  chunk_id_BL = jnp.where(has_chunk_BL, latest_BL, 0)

  # The next stage's layout: slot j belongs to the document whose budget covers it.
  run_R = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L))
  first_BR = jnp.where(budget_BR > 0, offset_BR, capacity)
  mark_BM = jnp.full((B, capacity), -1, jnp.int32).at[rows_B1, first_BR].max(run_R, mode="drop")
  slot_run_BM = jax.lax.cummax(mark_BM, axis=1)
  slot_run_c_BM = jnp.maximum(slot_run_BM, 0)
  end_BM = (jnp.take_along_axis(offset_BR, slot_run_c_BM, axis=1)
            + jnp.take_along_axis(budget_BR, slot_run_c_BM, axis=1))
  covered_BM = (slot_run_BM >= 0) & (jnp.arange(capacity)[None, :] < end_BM)
  owner_BM = jnp.where(covered_BM, jnp.take_along_axis(run_owner_BR, slot_run_c_BM, axis=1), 0)

  count = lambda x_BL: x_BL.sum(axis=1).astype(jnp.float32)  # noqa: E731
  return Chunks(
      boundary_BL=kept_BL, chunk_id_BL=chunk_id_BL, has_chunk_BL=has_chunk_BL, start_BM=start_BM,
      valid_BM=valid_BM, segment_ids_BM=segment_ids_BM, owner_BM=owner_BM,
      overflow_B=count(boundary_BL & ~kept_BL), row_overflow_B=count(in_budget_BL & ~kept_BL),
      proposed_B=count(boundary_BL))


def downsample(x_BLD: jax.Array, chunks: Chunks) -> jax.Array:
  """Gathers each chunk's first position: (B, M, D); empty slots are zeros."""
  x_BMD = jnp.take_along_axis(x_BLD, chunks.start_BM[:, :, None], axis=1)
  return jnp.where(chunks.valid_BM[:, :, None], x_BMD, jnp.zeros_like(x_BMD))


def upsample(z_BMD: jax.Array, chunks: Chunks) -> jax.Array:
  """Every position reads the output of the chunk it belongs to: (B, L, D); zeros where it has none."""
  z_BLD = jnp.take_along_axis(z_BMD, chunks.chunk_id_BL[:, :, None], axis=1)
  return jnp.where(chunks.has_chunk_BL[:, :, None], z_BLD, jnp.zeros_like(z_BLD))


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


def read_latest_kept(z_BLD: jax.Array, keep_prob_BL: jax.Array, chunks: Chunks) -> jax.Array:
  """Soft deletion's read-out (every position ran the inner network): each position reads the output of
  the latest kept position (itself if kept), as hard deletion does. Its gradient with respect to the keep
  probability p is that of u_t = p_t z_t + (1 - p_t) u_{t-1} (reset where p = 1: document starts), so the
  cost of deleting a byte reaches its gate, while the forward pass never mixes half-kept positions that
  inference drops. The gradient with respect to z is the hard read's. Float32."""
  read_BL = jnp.take_along_axis(chunks.start_BM, chunks.chunk_id_BL, axis=1)
  hard_BLD = jnp.take_along_axis(z_BLD, read_BL[..., None], axis=1).astype(jnp.float32)
  p_BL = keep_prob_BL.astype(jnp.float32)
  soft_BLD = linear_recurrence(1.0 - p_BL, p_BL[..., None] * jax.lax.stop_gradient(z_BLD).astype(jnp.float32))
  return hard_BLD + soft_BLD - jax.lax.stop_gradient(soft_BLD)
