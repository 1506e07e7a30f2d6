"""Offline datasets for the task YAMLs (`custom_dataset`): local jsonl files, no hub.

lm-eval calls a task's `custom_dataset` with the task's metadata, which takes what `--metadata`
gives on the command line (`{"hellaswag_file": "...", "corpus_mc_file": "..."}`); the
environment variables `HNET_HELLASWAG_FILE` / `HNET_CORPUS_MC_FILE` stand in where it is not given.
"""
import json
import os

import datasets as hf_datasets


def _records(path: str, what: str) -> list[dict]:
  if not path:
    raise ValueError(f"{what}: no file given; pass --metadata '{{\"{what}\": \"path.jsonl\"}}' "
                     f"(hnet-lm-eval: --{what} path.jsonl) or set HNET_{what.upper()}")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{what}: {path!r} does not exist")
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def hellaswag_file(**metadata) -> hf_datasets.DatasetDict:
  """A released-format HellaSwag jsonl (ctx_a, ctx_b, activity_label, endings, label) as the validation split."""
  path = metadata.get("hellaswag_file") or os.environ.get("HNET_HELLASWAG_FILE")
  records = [r for r in _records(path, "hellaswag_file") if r.get("label") not in (None, "")]
  for r in records:  # the hub copy stores labels as strings; lm-eval's hellaswag task reads either
    r["label"] = str(r["label"])
  keep = ("ind", "activity_label", "ctx_a", "ctx_b", "ctx", "endings", "source_id", "split", "split_type", "label")
  rows = [{k: r.get(k, "") if k != "ind" else int(r.get(k, i)) for k in keep} for i, r in enumerate(records)]
  for row, r in zip(rows, records):
    row["endings"] = list(r["endings"])
  return hf_datasets.DatasetDict({"validation": hf_datasets.Dataset.from_list(rows)})


def corpus_mc_file(**metadata) -> hf_datasets.DatasetDict:
  """Multiple-choice items cut from the embedded corpus (`python -m hnet.evals.harness.corpus_task`)."""
  path = metadata.get("corpus_mc_file") or os.environ.get("HNET_CORPUS_MC_FILE")
  rows = [{"context": r["context"], "choices": list(r["choices"]), "label": int(r["label"])}
          for r in _records(path, "corpus_mc_file")]
  return hf_datasets.DatasetDict({"validation": hf_datasets.Dataset.from_list(rows)})
