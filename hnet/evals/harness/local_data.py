"""Offline datasets for the task YAMLs (`custom_dataset`): local jsonl files, no hub.

lm-eval calls a task's `custom_dataset` with the task's metadata, which takes what `--metadata`
gives on the command line (`{"hellaswag_file": "...", "corpus_mc_file": "..."}`); the
environment variables `HNET_HELLASWAG_FILE` / `HNET_CORPUS_MC_FILE` stand in where it is not given.
"""
import os

import datasets as hf_datasets

from hnet.evals import mc_items


def _path(metadata: dict, what: str) -> str:
  """The file named by the task's metadata (or $HNET_<WHAT>); one clear error where neither names one."""
  path = metadata.get(what) or os.environ.get(f"HNET_{what.upper()}")
  if not path:
    raise ValueError(f"{what}: no file given; pass --metadata '{{\"{what}\": \"path.jsonl\"}}' "
                     f"(hnet-lm-eval: --{what} path.jsonl) or set HNET_{what.upper()}")
  return path


def hellaswag_file(**metadata) -> hf_datasets.DatasetDict:
  """A released-format HellaSwag jsonl (ctx_a, ctx_b, activity_label, endings, label) as the validation split."""
  records = [r for r in mc_items.read_jsonl(_path(metadata, "hellaswag_file"), "hellaswag_file")
             if r.get("label") not in (None, "")]
  for r in records:  # the hub copy stores labels as strings; lm-eval's hellaswag task reads either
    r["label"] = str(r["label"])
  keep = ("ind", "activity_label", "ctx_a", "ctx_b", "ctx", "endings", "source_id", "split", "split_type", "label")
  rows = [{k: r.get(k, "") if k != "ind" else int(r.get(k, i)) for k in keep} for i, r in enumerate(records)]
  for row, r in zip(rows, records):
    row["endings"] = list(r["endings"])
  return hf_datasets.DatasetDict({"validation": hf_datasets.Dataset.from_list(rows)})


def corpus_mc_file(**metadata) -> hf_datasets.DatasetDict:
  """Multiple-choice items cut from the embedded corpus (`python -m hnet.evals.harness.corpus_task`)."""
  rows = [{"context": it.context, "choices": list(it.choices), "label": it.label}
          for it in mc_items.read_corpus_jsonl(_path(metadata, "corpus_mc_file"))]
  return hf_datasets.DatasetDict({"validation": hf_datasets.Dataset.from_list(rows)})
