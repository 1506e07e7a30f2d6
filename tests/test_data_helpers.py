"""Shared helpers for the data tests: small corpora, data configs, batch decoding."""
import json
import os

import numpy as np

from configs.base import get_config


def data_config(tmp_dir, **overrides):
  """config.data with a private data dir and small settings (override any key)."""
  c = get_config().data
  c.data_dir = os.path.join(str(tmp_dir), "tfds")
  c.seq_len = 32
  c.packing_bins = 4
  c.shuffle_window_mb = 0.001  # a few rows: still exercises the window shuffle
  c.prefetch = 0
  for k, v in overrides.items():
    setattr(c, k, v)
  return c


def documents(n: int, seed: int = 0, max_len: int = 100, with_empty: bool = True, ascii_only: bool = False
              ) -> list[str]:
  """Distinct documents "<i>..." of up to max_len characters, some multi-byte (every 7th empty)."""
  rng = np.random.default_rng(seed)
  alphabet = list("abcdefgh ijk\n") + ([] if ascii_only else ["é", "€", "😀"])
  docs = []
  for i in range(n):
    body = "".join(rng.choice(alphabet, size=int(rng.integers(0, max_len))))
    docs.append("" if with_empty and i % 7 == 0 else f"<{i}>{body}")
  return docs


def doc_id(piece: bytes) -> int:
  """The i of a piece that starts a document "<i>..." (BOS first)."""
  return int(piece[2:piece.index(b">")])


def write_jsonl(path, texts, key: str = "text") -> str:
  with open(path, "w", encoding="utf-8") as f:
    for t in texts:
      f.write(json.dumps({key: t}) + "\n")
  return str(path)


def pieces(batch: dict) -> list[bytes]:
  """Every document piece in a batch, as its token bytes.

  A piece's tokens are its inputs, plus the last target when the piece runs to the row's end
  (then its last token is only a target, and loss_mask is 1 there).
  """
  out = []
  for inp, tgt, seg, mask in zip(batch["inputs"], batch["targets"], batch["segment_ids"], batch["loss_mask"]):
    for s in np.unique(seg[seg > 0]):
      idx = np.nonzero(seg == s)[0]
      tail = bytes([int(tgt[idx[-1]])]) if mask[idx[-1]] else b""
      out.append(bytes(inp[idx].astype(np.uint8)) + tail)
  return out


def target_bytes(batch: dict) -> list[int]:
  """The target bytes counted by the loss (loss_mask 1)."""
  return batch["targets"][batch["loss_mask"] > 0].tolist()


def test_pieces_helper():
  # Row tokens [BOS a EOS BOS b]: the second piece's last token is only a target.
  batch = {"inputs": np.array([[254, 97, 255, 254]]), "targets": np.array([[97, 255, 254, 98]]),
           "segment_ids": np.array([[1, 1, 1, 2]]), "loss_mask": np.array([[1, 1, 0, 1]])}
  assert pieces(batch) == [bytes([254, 97, 255]), bytes([254, 98])]
