"""Byte encoding, piece splitting and the row -> batch format (pure numpy)."""
import subprocess
import sys

import numpy as np
import pytest

from hnet.data import bytes as doc_bytes, rows
from hnet.data.batch import BATCH_DTYPES


def test_encode_adds_bos_and_eos():
  tokens = doc_bytes.encode("hé")
  assert tokens.dtype == np.uint8
  assert tokens.tolist() == [254, 104, 0xC3, 0xA9, 255]
  assert doc_bytes.encode("").tolist() == [254, 255]


@pytest.mark.parametrize("policy, expected", [("keep", b"a\xffb"), ("replace", "a\ufffdb".encode())])
def test_invalid_utf8_policy(policy, expected):
  assert doc_bytes.to_bytes(b"a\xffb", policy) == expected
  # A reader that decoded with surrogateescape gets the same bytes back.
  assert doc_bytes.to_bytes(b"a\xffb".decode("utf-8", "surrogateescape"), policy) == expected


def test_unknown_policy_names_the_key():
  with pytest.raises(ValueError, match="data.invalid_utf8='drop'"):
    doc_bytes.check_policy("drop")


@pytest.mark.parametrize("n", [2, 3, 8, 9, 10, 16, 17, 18, 25, 100])
def test_split_predicts_every_target_once(n):
  L = 8
  tokens = np.arange(n, dtype=np.uint8)
  full_KR, last = doc_bytes.split(tokens, L)
  all_pieces = [*full_KR, last]
  assert [p.tolist() for p in all_pieces] == [p.tolist() for p in doc_bytes.pieces(tokens, L)]
  assert len(all_pieces) == doc_bytes.num_pieces(n, L)
  assert all(2 <= len(p) <= L + 1 for p in all_pieces) and full_KR.shape[1:] == (L + 1,)
  for k, p in enumerate(all_pieces):  # piece k = tokens[kL : kL + L + 1]: overlap of one token
    assert p.tolist() == tokens[k * L:k * L + L + 1].tolist()
  targets = [t for p in all_pieces for t in p[1:].tolist()]
  assert targets == tokens[1:].tolist()


def test_to_batch_exact_arrays():
  # Row 0: piece A (3 tokens) + piece B (2 tokens) + padding; row 1: one full piece.
  tokens = np.array([[254, 97, 255, 254, 98, 0], [1, 2, 3, 4, 5, 6]], np.uint8)
  seg = np.array([[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 1, 1]], rows.SEGMENT_DTYPE)
  b = rows.to_batch({"tokens": tokens, "segment_ids": seg}, batch_size=3)
  np.testing.assert_array_equal(b["inputs"], [[254, 97, 255, 254, 98], [1, 2, 3, 4, 5], [0] * 5])
  np.testing.assert_array_equal(b["targets"], [[97, 255, 254, 98, 0], [2, 3, 4, 5, 6], [0] * 5])
  np.testing.assert_array_equal(b["segment_ids"], [[1, 1, 1, 2, 2], [1] * 5, [0] * 5])
  np.testing.assert_array_equal(b["loss_mask"], [[1, 1, 0, 1, 0], [1] * 5, [0] * 5])
  assert {k: v.dtype for k, v in b.items()} == BATCH_DTYPES == {
      "inputs": np.int32, "targets": np.int32, "segment_ids": np.int32, "loss_mask": np.float32}


def test_block_puts_full_pieces_after_the_packed_row():
  packed = {"tokens": np.array([254, 97, 255, 0], np.uint8), "tokens_segment_ids": np.array([1, 1, 1, 0]),
            "full": [np.zeros((0, 4), np.uint8), np.arange(8, dtype=np.uint8).reshape(2, 4)]}
  b = rows.block(packed)
  np.testing.assert_array_equal(b["tokens"], [[254, 97, 255, 0], [0, 1, 2, 3], [4, 5, 6, 7]])
  np.testing.assert_array_equal(b["segment_ids"], [[1, 1, 1, 0], [1] * 4, [1] * 4])


def test_empty_batch_has_no_targets():
  b = rows.empty_batch(2, 5)
  assert b["inputs"].shape == (2, 5) and b["loss_mask"].sum() == 0


def test_package_import_is_light():
  code = ("import sys, hnet.data, hnet.data.batch, hnet.data.bytes, hnet.data.rows, hnet.data.sources; "
          "print(sorted(m for m in ('grain', 'tensorflow_datasets', 'tensorflow') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]"
