"""Cross-document leakage of a trained model: does a packed document see its neighbours?

  python -m bench.document_isolation --workdir runs/default --out bench/results/document_isolation_cpu.json

Packs validation documents into the run's rows (several per row), then measures on the trained
weights, in float32:
- `replaced`: the largest change of any logit of the other documents of a row when one of its
  documents is replaced by a different one of the same length (0 means no leakage);
- `alone`: the largest difference between a document's logits packed and alone in a row.
Routing, chunk budgets, the inner stages' attention and the dechunking all run as in training
(`train=False`). The tests check the same property on random weights (tests/test_model.py).
"""
# pylint: disable=invalid-name
import argparse
import datetime
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hnet import BOS_ID
from hnet.evals import documents
from hnet.train import runs


def pack_rows(docs: list[bytes], L: int, per_row: int) -> tuple[np.ndarray, np.ndarray, list]:
  """Rows of `per_row` documents each (BOS + bytes, cut to share L), padding after; spans per document."""
  share = L // per_row
  rows = len(docs) // per_row
  tokens, seg, spans = np.zeros((rows, L), np.int32), np.zeros((rows, L), np.int32), []
  for r in range(rows):
    at = 0
    for d in range(per_row):
      body = np.frombuffer(docs[r * per_row + d], np.uint8)[: share - 1].astype(np.int32)
      doc = np.concatenate([[BOS_ID], body])
      tokens[r, at:at + len(doc)], seg[r, at:at + len(doc)] = doc, d + 1
      spans.append((r, at, at + len(doc)))
      at += len(doc)
  return tokens, seg, spans


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", default="runs/default")
  p.add_argument("--documents", type=int, default=64)
  p.add_argument("--per_row", type=int, default=4)
  p.add_argument("--out", default="")
  args = p.parse_args()
  jax.config.update("jax_default_matmul_precision", "highest")
  loaded = runs.load(args.workdir, overrides={"model.dtype": "float32"})
  L = loaded.config.data.seq_len
  docs = [d for d in documents.load(loaded.config.data, limit=4 * args.documents) if len(d) >= L][: args.documents]
  if len(docs) < 2 * args.per_row:
    raise SystemExit(f"only {len(docs)} validation documents of >= {L} bytes")
  step = jax.jit(lambda params, t, s: nnx.merge(loaded.graphdef, params)(t, s, train=False)[0])

  def forward(t, s):
    return step(loaded.params, t, s)

  tokens, seg, spans = pack_rows(docs, L, args.per_row)
  logits = np.asarray(forward(jnp.asarray(tokens), jnp.asarray(seg)))

  # Replace document d of each row by the same span of the next row's document d.
  replaced, alone = 0.0, 0.0
  for d in range(args.per_row):
    swapped = tokens.copy()
    for r in range(tokens.shape[0]):
      _, a, b = spans[r * args.per_row + d]
      swapped[r, a + 1:b] = tokens[(r + 1) % tokens.shape[0], a + 1:b]
    out = np.asarray(forward(jnp.asarray(swapped), jnp.asarray(seg)))
    others = (seg != d + 1) & (seg > 0)
    replaced = max(replaced, float(np.abs(out - logits)[others].max()))
  for r, a, b in spans:
    one_t, one_s = np.zeros((1, L), np.int32), np.zeros((1, L), np.int32)
    one_t[0, : b - a], one_s[0, : b - a] = tokens[r, a:b], 1
    out = np.asarray(forward(jnp.asarray(one_t), jnp.asarray(one_s)))
    alone = max(alone, float(np.abs(out[0, : b - a] - logits[r, a:b]).max()))
  result = {"date": datetime.date.today().isoformat(), "jax": jax.__version__, "workdir": args.workdir,
            "step": loaded.step, "router": loaded.model_cfg.router, "seq_len": L, "documents": len(spans),
            "per_row": args.per_row, "max_logit_change_when_a_neighbour_is_replaced": replaced,
            "max_logit_difference_packed_vs_alone": alone, "logit_scale": float(np.abs(logits).max())}
  print(json.dumps(result, indent=1))
  if args.out:
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  main()
