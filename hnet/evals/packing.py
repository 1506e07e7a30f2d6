"""Segments of byte tokens packed into fixed-length rows, with a per-target mask.

Legend: R = L + 1 tokens per row, L model inputs per row, B rows per batch.
A segment is (tokens, target_mask): up to R tokens, and for each of its len - 1 targets
whether it counts. Segments are packed in order (next fit), each row holding as many as
fit; rows become model batches with `hnet.data.rows.to_batch`, whose loss mask is then
multiplied by the segments' target masks. Every segment keeps its (row, segment id), so
per-segment sums can be read back from per-position values.
"""
# pylint: disable=invalid-name
import dataclasses
from typing import Iterator, Sequence

import numpy as np

from hnet import BOS_ID
from hnet.data import bytes as doc_bytes, rows as rows_lib


@dataclasses.dataclass
class Packed:
  tokens_KR: np.ndarray  # uint8
  segment_ids_KR: np.ndarray  # uint16, 1.. per row, 0 = padding
  target_mask_KL: np.ndarray  # float32, 1 where a target counts
  where: list[tuple[int, int]]  # per segment: (row, segment id)


def pack(segments: Sequence[tuple[np.ndarray, np.ndarray]], seq_len: int) -> Packed:
  """Packs (tokens, target_mask) segments of <= seq_len + 1 tokens into rows of seq_len + 1."""
  R = seq_len + 1
  rows: list[list[tuple[np.ndarray, np.ndarray]]] = []
  used = R + 1
  where = []
  for tokens, mask in segments:
    if not 2 <= len(tokens) <= R:
      raise ValueError(f"a segment has {len(tokens)} tokens: it must have 2..{R} (data.seq_len + 1)")
    if len(mask) != len(tokens) - 1:
      raise ValueError(f"target mask of length {len(mask)} for {len(tokens)} tokens")
    if used + len(tokens) > R:
      rows.append([])
      used = 0
    rows[-1].append((tokens, mask))
    used += len(tokens)
    where.append((len(rows) - 1, len(rows[-1])))
  K = len(rows)
  tokens_KR = np.zeros((K, R), np.uint8)
  seg_KR = np.zeros((K, R), rows_lib.SEGMENT_DTYPE)
  mask_KL = np.zeros((K, seq_len), np.float32)
  for k, row in enumerate(rows):
    p = 0
    for s, (tokens, mask) in enumerate(row, 1):
      n = len(tokens)
      tokens_KR[k, p:p + n] = tokens
      seg_KR[k, p:p + n] = s
      mask_KL[k, p:p + n - 1] = mask
      p += n
  return Packed(tokens_KR, seg_KR, mask_KL, where)


def batches(packed: Packed, batch_size: int) -> Iterator[dict]:
  """Model batches of `batch_size` rows (the last one padded with empty rows)."""
  for a in range(0, len(packed.tokens_KR), batch_size):
    rows = {"tokens": packed.tokens_KR[a:a + batch_size], "segment_ids": packed.segment_ids_KR[a:a + batch_size]}
    batch = rows_lib.to_batch(rows, batch_size)
    mask_BL = np.zeros_like(batch["loss_mask"])
    mask_BL[:len(rows["tokens"])] = packed.target_mask_KL[a:a + batch_size]
    batch["loss_mask"] = batch["loss_mask"] * mask_BL
    yield batch


def segment_sums(packed: Packed, values_KL: np.ndarray) -> np.ndarray:
  """Per segment, the sum of `values_KL` (e.g. masked NLL per position) over its positions."""
  seg_KL = packed.segment_ids_KR[:, :-1].astype(np.int64)
  width = int(packed.segment_ids_KR.max(initial=0)) + 1
  sums_KS = np.zeros((len(seg_KL), width), np.float64)
  rows_KL = np.broadcast_to(np.arange(len(seg_KL))[:, None], seg_KL.shape)
  np.add.at(sums_KS, (rows_KL, seg_KL), values_KL.astype(np.float64))
  return np.array([sums_KS[k, s] for k, s in packed.where])


# ---------------------------------------------------------------------------------------------
# Segment builders
# ---------------------------------------------------------------------------------------------
def document_segments(documents: Sequence[bytes | str], seq_len: int, invalid_utf8: str = "keep"
                      ) -> list[tuple[np.ndarray, np.ndarray]]:
  """Every document as BOS + bytes + EOS, split into pieces of <= seq_len + 1 tokens (all targets count).

  Consecutive pieces share one token, so each target is counted exactly once.
  """
  out = []
  for doc in documents:
    for piece in doc_bytes.pieces(doc_bytes.encode(doc, invalid_utf8), seq_len):
      out.append((piece, np.ones(len(piece) - 1, np.float32)))
  return out


def left_truncate(data: bytes, max_bytes: int) -> bytes:
  """The last <= max_bytes bytes, not starting inside a UTF-8 character."""
  if len(data) <= max_bytes:
    return data
  data = data[len(data) - max_bytes:] if max_bytes > 0 else b""
  i = 0
  while i < len(data) and 0x80 <= data[i] <= 0xBF:
    i += 1
  return data[i:]


def right_truncate(data: bytes, max_bytes: int) -> bytes:
  """The first <= max_bytes bytes, not ending inside a UTF-8 character."""
  if len(data) <= max_bytes:
    return data
  end = max(max_bytes, 0)
  while 0 < end and 0x80 <= data[end] <= 0xBF:
    end -= 1
  return data[:end]


def continuation_segment(context: bytes, continuation: bytes, max_context_bytes: int
                         ) -> tuple[np.ndarray, np.ndarray]:
  """BOS + context (cut from the left to max_context_bytes) + continuation; only continuation targets count."""
  context = left_truncate(context, max_context_bytes)
  tokens = np.frombuffer(bytes([BOS_ID]) + context + continuation, np.uint8)
  if len(tokens) < 2:  # both empty (a perturbation can empty a text): one unscored target
    return np.array([BOS_ID, BOS_ID], np.uint8), np.zeros(1, np.float32)
  mask = np.zeros(len(tokens) - 1, np.float32)
  mask[len(context):] = 1.0  # target j predicts token j + 1; continuation tokens start at 1 + len(context)
  return tokens, mask
