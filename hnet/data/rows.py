"""Packed rows of R = L + 1 tokens -> the model's batch (numpy, no grain).

Legend: B rows in a batch, R = L + 1 tokens per packed row, L inputs per row, K rows.
A row holds one or more document pieces; `segment_ids` numbers them 1, 2, ... (0 = padding).
The model sees inputs = row[:-1] and predicts targets = row[1:]; a target counts
(loss_mask 1) only where it continues the same piece.
"""
# pylint: disable=invalid-name
import numpy as np

from hnet.data.batch import BATCH_DTYPES

SEGMENT_DTYPE = np.uint16  # a row of R tokens holds at most R // 2 pieces (>= 2 tokens each)
MAX_SEQ_LEN = 2 * np.iinfo(SEGMENT_DTYPE).max - 1


def block(packed: dict) -> dict:
  """One row packed by grain (plus the full rows riding with it) -> a block of rows.

  `packed` has `tokens` (R,) and `tokens_segment_ids` (R,) from the packer, and `full`: for
  each document whose last piece is in this row, its full pieces (K_i, R), one piece per row.
  """
  full = [f for f in packed["full"] if len(f)]
  tokens_KR = np.concatenate([packed["tokens"][None], *full]) if full else packed["tokens"][None]
  seg_KR = np.ones(tokens_KR.shape, SEGMENT_DTYPE)
  seg_KR[0] = packed["tokens_segment_ids"]
  return {"tokens": tokens_KR, "segment_ids": seg_KR}


def shuffle(rows: dict, rng: np.random.Generator) -> dict:
  """Permutes the rows of a block (spreads one document's pieces over many batches)."""
  order = rng.permutation(len(rows["tokens"]))
  return {k: v[order] for k, v in rows.items()}


def to_batch(rows: dict, batch_size: int | None = None) -> dict:
  """Rows {tokens, segment_ids} (B', R) -> the model batch (hnet.data.batch), padded with empty rows to `batch_size`."""
  tokens_BR, seg_BR = rows["tokens"], rows["segment_ids"]
  if batch_size is not None and len(tokens_BR) < batch_size:
    pad = ((0, batch_size - len(tokens_BR)), (0, 0))
    tokens_BR, seg_BR = np.pad(tokens_BR, pad), np.pad(seg_BR, pad)
  seg_BL = seg_BR[:, :-1]
  batch = {
      "inputs": tokens_BR[:, :-1],
      "targets": tokens_BR[:, 1:],
      "segment_ids": seg_BL,
      "loss_mask": (seg_BR[:, 1:] == seg_BR[:, :-1]) & (seg_BL > 0),
  }
  return {k: batch[k].astype(dtype) for k, dtype in BATCH_DTYPES.items()}


def empty_batch(batch_size: int, seq_len: int) -> dict:
  """A batch of padding only (loss_mask 0): fills eval iterators to a common length."""
  R = seq_len + 1
  return to_batch({"tokens": np.zeros((batch_size, R), np.uint8),
                   "segment_ids": np.zeros((batch_size, R), SEGMENT_DTYPE)})
