"""A local multiple-choice task cut from held-out documents of the embedded corpus (`hnet_corpus_mc`).

  python -m hnet.evals.harness.corpus_task --out corpus_mc.jsonl [--num_items 1000] [--config default]

Items as `eval.py mc` builds them (`hnet.evals.mc_items.build_items`: a context cut at a word boundary,
its true continuation and continuations of other documents, `eval.*` byte budgets; one item per
document per seed, seeds from `eval.seed` on until there are enough), one JSON line each:
`{"context", "choices", "label"}`, the choices with their leading space (the task's delimiter is '').
"""
import argparse
import importlib
import json
import os

from hnet.evals import documents, mc

MAX_PASSES = 64  # seeds tried before settling for fewer items than asked


def build(c, num_items: int) -> list:
  """`num_items` distinct items; a document gives one item per seed, so several seeds cover a small split."""
  texts = documents.as_text(documents.load(c.data, split=c.data.eval_split, limit=c.eval.num_documents))
  items, seen = [], set()
  for seed in range(c.eval.seed, c.eval.seed + MAX_PASSES):
    c.eval.seed, c.eval.num_items = seed, num_items - len(items)
    for it in mc.document_items(texts, c):
      if it.context not in seen:
        seen.add(it.context)
        items.append(it)
    if len(items) >= num_items:
      break
  return items


def write(path: str, c, num_items: int) -> int:
  items = build(c, num_items)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    for it in items:
      f.write(json.dumps({"context": it.context, "choices": list(it.choices), "label": it.label},
                         ensure_ascii=False) + "\n")
  return len(items)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="the jsonl to write")
  parser.add_argument("--num_items", type=int, default=1000)
  parser.add_argument("--config", default="default", help="a config of configs/, optionally with a variant "
                      "('default', 'flat:tiny'): its data and eval sections are used (default: the embedded corpus)")
  args = parser.parse_args(argv)
  if args.num_items < 1:
    parser.error(f"--num_items must be >= 1, got {args.num_items}")
  name, _, variant = args.config.partition(":")
  c = importlib.import_module(f"hnet.configs.{name}").get_config(variant or None)
  n = write(args.out, c, args.num_items)
  print(f"wrote {n} items to {args.out}")


if __name__ == "__main__":
  main()
