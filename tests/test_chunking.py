"""Capacity cut, gather/scatter and smoothing against plain-Python references."""
import jax
import jax.numpy as jnp
import numpy as np

from hnet.model import chunking


def test_positions_and_document_starts():
  seg = jnp.array([[1, 1, 1, 2, 2, 0, 0], [1, 2, 2, 2, 3, 3, 3]])
  np.testing.assert_array_equal(chunking.positions_in_document(seg),
                                [[0, 1, 2, 0, 1, 0, 1], [0, 0, 1, 2, 0, 1, 2]])
  np.testing.assert_array_equal(chunking.document_starts(seg),
                                [[1, 0, 0, 1, 0, 0, 0], [1, 1, 0, 0, 1, 0, 0]])


def _budget(ratio: float):
  return lambda n: jnp.minimum(n, -(-(n * 1000) // int(1000 * ratio)))


def test_make_chunks_forces_document_starts_and_keeps_each_documents_budget():
  boundary = jnp.array([[0, 1, 1, 0, 1, 1, 0, 1]], bool)
  seg = jnp.array([[1, 1, 1, 1, 2, 2, 2, 0]])
  # Budgets ceil(n / 2): document 1 (4 positions) 2 slots, document 2 (3 positions) 2 slots.
  ch = chunking.make_chunks(boundary, seg, capacity=4, budget_fn=_budget(2.0))
  # Proposed: 0 (doc start), 1, 2, 4 (doc start), 5 — padding at 7 ignored; doc 1 drops 2.
  np.testing.assert_array_equal(ch.boundary_BL[0], [1, 1, 0, 0, 1, 1, 0, 0])
  np.testing.assert_array_equal(ch.chunk_id_BL[0], [0, 1, 1, 1, 2, 3, 3, 0])
  np.testing.assert_array_equal(ch.has_chunk_BL[0], [1, 1, 1, 1, 1, 1, 1, 0])
  np.testing.assert_array_equal(ch.start_BM[0], [0, 1, 4, 5])
  np.testing.assert_array_equal(ch.segment_ids_BM[0], [1, 1, 2, 2])
  np.testing.assert_array_equal(ch.owner_BM[0], [1, 1, 2, 2])
  assert float(ch.overflow_B[0]) == 1 and float(ch.proposed_B[0]) == 5 and float(ch.row_overflow_B[0]) == 0


def test_make_chunks_leaves_unused_budget_empty_and_truncates_documents_past_capacity():
  boundary = jnp.zeros((1, 9), bool)  # only the forced document starts
  seg = jnp.array([[1, 1, 1, 1, 2, 2, 3, 3, 3]])
  # Budgets ceil(n / 2): 2, 1, 2 slots; capacity 4 holds documents 1 and 2 and half of 3's budget.
  ch = chunking.make_chunks(boundary, seg, capacity=4, budget_fn=_budget(2.0))
  np.testing.assert_array_equal(ch.valid_BM[0], [1, 0, 1, 1])
  np.testing.assert_array_equal(ch.owner_BM[0], [1, 1, 2, 3])
  np.testing.assert_array_equal(ch.segment_ids_BM[0], [1, 0, 2, 3])
  np.testing.assert_array_equal(ch.chunk_id_BL[0], [0, 0, 0, 0, 2, 2, 3, 3, 3])
  assert float(ch.row_overflow_B[0]) == 0  # document 3 did not need its second slot
  # With capacity 3, document 3's first slot does not fit: its positions read no chunk.
  ch = chunking.make_chunks(boundary, seg, capacity=3, budget_fn=_budget(2.0))
  np.testing.assert_array_equal(ch.has_chunk_BL[0], [1, 1, 1, 1, 1, 1, 0, 0, 0])
  np.testing.assert_array_equal(ch.owner_BM[0], [1, 1, 2])
  assert float(ch.row_overflow_B[0]) == 1
  z = jnp.arange(3, dtype=jnp.float32)[None, :, None] + 1
  np.testing.assert_array_equal(chunking.upsample(z, ch)[0, :, 0], [1, 1, 1, 1, 3, 3, 0, 0, 0])


def test_inner_budgets_follow_the_outer_allocation_not_the_chunk_count():
  """At an inner stage a document's length is its outer budget (slots owned), used or not."""
  boundary = jnp.zeros((1, 6), bool)
  seg = jnp.array([[1, 0, 0, 0, 2, 2]])  # document 1 used 1 of its 4 slots
  owner = jnp.array([[1, 1, 1, 1, 2, 2]])
  ch = chunking.make_chunks(boundary, seg, capacity=4, budget_fn=_budget(2.0), owner_ids_BL=owner)
  np.testing.assert_array_equal(ch.owner_BM[0], [1, 1, 2, 0])  # budgets ceil(4/2) = 2 and ceil(2/2) = 1
  np.testing.assert_array_equal(ch.segment_ids_BM[0], [1, 0, 2, 0])


def test_downsample_upsample_roundtrip():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 10, 3)), jnp.float32)
  boundary = jnp.asarray(rng.random((2, 10)) < 0.4)
  seg = jnp.ones((2, 10), jnp.int32)
  ch = chunking.make_chunks(boundary, seg, capacity=6, budget_fn=lambda n: n)
  x_BMD = chunking.downsample(x, ch)
  up = chunking.upsample(x_BMD, ch)
  for b in range(2):
    last = None
    for t in range(10):
      if ch.boundary_BL[b, t]:
        last = t
      np.testing.assert_allclose(up[b, t], x[b, last])
  assert np.all(np.asarray(x_BMD)[~np.asarray(ch.valid_BM)] == 0)


def test_smoothing_matches_python_ema_with_resets():
  rng = np.random.default_rng(1)
  z = rng.normal(size=(1, 6, 2)).astype(np.float32)
  p = rng.random((1, 6)).astype(np.float32)
  seg = jnp.array([[1, 1, 1, 1, 2, 2]])
  ch = chunking.make_chunks(jnp.ones((1, 6), bool), seg, capacity=6, budget_fn=lambda n: n)
  got = chunking.smooth(jnp.asarray(z), jnp.asarray(p), ch)
  want = np.zeros_like(z)
  prev = np.zeros(2, np.float32)
  for j in range(6):
    pj = np.clip(p[0, j], 1e-4, 1 - 1e-4)
    if j in (0, 4):
      prev = np.zeros(2, np.float32)
    prev = pj * z[0, j] + (1 - pj) * prev
    want[0, j] = prev
  np.testing.assert_allclose(got, want, atol=1e-6)


def test_soft_deletion_reads_the_latest_kept_position_with_the_soft_reads_gradient():
  """Forward: each position reads the latest kept position's output (hard deletion's read). Gradients: for
  the keep probabilities, those of u_t = p_t z_t + (1 - p_t) u_{t-1}; for z, the hard read's."""
  seg = jnp.array([[1, 1, 1, 1, 2, 2, 2, 2]])
  p = jnp.array([[1.0, 0.3, 0.8, 0.1, 1.0, 0.6, 0.2, 0.9]])  # 1 at document starts (pinned)
  keep = p > 0.5
  ch = chunking.make_chunks(keep, seg, 8, lambda n: n)
  z = jax.random.normal(jax.random.key(0), (1, 8, 3))
  w = jax.random.normal(jax.random.key(1), (1, 8, 3))
  up = chunking.read_latest_kept(z, p, ch)
  latest = [0, 0, 2, 2, 4, 5, 5, 7]
  np.testing.assert_allclose(up[0], z[0, latest], rtol=1e-6)

  def ema(p_, z_):
    out, u = [], jnp.zeros(3)
    for t in range(8):
      u = p_[0, t] * z_[0, t] + (1 - p_[0, t]) * u
      out.append(u)
    return jnp.stack(out)[None]

  grad_p = jax.grad(lambda p_: jnp.sum(w * chunking.read_latest_kept(z, p_, ch)))(p)
  np.testing.assert_allclose(grad_p, jax.grad(lambda p_: jnp.sum(w * ema(p_, z)))(p), rtol=1e-5, atol=1e-6)
  grad_z = jax.grad(lambda z_: jnp.sum(w * chunking.read_latest_kept(z_, p, ch)))(z)
  np.testing.assert_allclose(grad_z, jax.grad(lambda z_: jnp.sum(w * z_[:, latest]))(z), rtol=1e-6)
