"""Bits/byte over a whole split (or a text file), with per-stage compression.

The validation split comes from `pipeline.make_eval_iterator` with every batch (the last
one padded, padding masked), so each target byte counts exactly once. A text file is read
like data.text_paths and packed the same way (documents as BOS + bytes + EOS, split into
pieces of data.seq_len + 1 tokens sharing one token). Bytes per chunk at stage s is the
number of byte positions over the number of stage-s chunks: 1 / boundary_frac composed
across stages. A router that trains soft (the delete gate) is scored twice: hard deletion
(inference, as generated) and soft deletion (train=True, as trained).
"""
# pylint: disable=invalid-name
from typing import Callable, Iterable

from hnet.evals import documents, packing, scoring
from hnet.model import routers
from hnet.train.runs import Loaded


def _batch_factory(loaded: Loaded, text_file: str | None, split: str) -> tuple[Callable[[], Iterable[dict]], str]:
  c = loaded.config
  B = loaded.batch_size(c.eval.batch_size)
  if text_file:
    docs = documents.from_file(text_file, c.data)
    packed = packing.pack(packing.document_segments(docs, c.data.seq_len, c.data.invalid_utf8), c.data.seq_len)
    return (lambda: packing.batches(packed, B)), f"{text_file} ({len(docs)} documents)"
  from hnet.data import pipeline  # pylint: disable=import-outside-toplevel  (grain/tfds are heavy)
  stats = pipeline.prepare(c.data, need=(split,))
  return (lambda: pipeline.make_eval_iterator(c.data, split=split, global_batch_size=B)), (
      f"{stats['dataset']}:{split}")


def evaluate(loaded: Loaded, *, text_file: str | None = None, split: str | None = None,
             max_batches: int | None = None) -> dict:
  """{'bits_per_byte', 'target_bytes', 'stages': [...], ('soft': {...} for the delete gate)}."""
  c = loaded.config
  split = split or c.data.eval_split
  max_batches = c.eval.bpb_batches if max_batches is None else max_batches
  make_batches, source = _batch_factory(loaded, text_file, split)
  result = {"source": source, "step": loaded.step, "exact": max_batches < 0,
            **scoring.run(scoring.Scorer(loaded), make_batches(), max_batches)}
  if routers.router_class(loaded.model_cfg.router).soft_in_training:  # also as trained (MrT5's soft deletion)
    soft = scoring.run(scoring.Scorer(loaded, train=True), make_batches(), max_batches)
    result["soft"] = {k: soft[k] for k in ("bits_per_byte", "target_bytes", "stages")}
  return result


def rows(result: dict) -> list[dict]:
  """Table rows: metric, value."""
  out = [{"metric": "bits/byte" + (" (hard deletion)" if "soft" in result else ""),
          "value": f"{result['bits_per_byte']:.4f}"}]
  if "soft" in result:
    out.append({"metric": "bits/byte (soft deletion, train=True)", "value": f"{result['soft']['bits_per_byte']:.4f}"})
  out.append({"metric": "target bytes", "value": f"{result['target_bytes']:,}"})
  for st in result["stages"]:
    s = st["stage"]
    out.append({"metric": f"stage {s} bytes/chunk", "value": f"{st['bytes_per_chunk']:.3f}"})
    out.append({"metric": f"stage {s} boundary fraction", "value": f"{st['boundary_frac']:.4f}"})
    out.append({"metric": f"stage {s} capacity overflow", "value": f"{st['overflow_frac']:.4f}"})
  return out
