"""Capacity cut, gather/scatter and smoothing against plain-Python references."""
import jax.numpy as jnp
import numpy as np

from hnet import chunking


def test_positions_and_document_starts():
  seg = jnp.array([[1, 1, 1, 2, 2, 0, 0], [1, 2, 2, 2, 3, 3, 3]])
  np.testing.assert_array_equal(chunking.positions_in_document(seg),
                                [[0, 1, 2, 0, 1, 0, 1], [0, 0, 1, 2, 0, 1, 2]])
  np.testing.assert_array_equal(chunking.document_starts(seg),
                                [[1, 0, 0, 1, 0, 0, 0], [1, 1, 0, 0, 1, 0, 0]])


def test_make_chunks_forces_document_starts_and_drops_latest_boundaries():
  boundary = jnp.array([[0, 1, 1, 0, 1, 1, 0, 1]], bool)
  seg = jnp.array([[1, 1, 1, 1, 2, 2, 2, 0]])
  ch = chunking.make_chunks(boundary, seg, capacity=4)
  # Proposed: 0 (doc start), 1, 2, 4 (doc start), 5 — padding at 7 ignored; capacity 4 drops 5.
  np.testing.assert_array_equal(ch.boundary_BL[0], [1, 1, 1, 0, 1, 0, 0, 0])
  np.testing.assert_array_equal(ch.chunk_id_BL[0], [0, 1, 2, 2, 3, 3, 3, 3])
  np.testing.assert_array_equal(ch.start_BM[0], [0, 1, 2, 4])
  np.testing.assert_array_equal(ch.segment_ids_BM[0], [1, 1, 1, 2])
  assert float(ch.overflow_B[0]) == 1 and float(ch.proposed_B[0]) == 5


def test_downsample_upsample_roundtrip():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 10, 3)), jnp.float32)
  boundary = jnp.asarray(rng.random((2, 10)) < 0.4)
  seg = jnp.ones((2, 10), jnp.int32)
  ch = chunking.make_chunks(boundary, seg, capacity=6)
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
  ch = chunking.make_chunks(jnp.ones((1, 6), bool), seg, capacity=6)
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
