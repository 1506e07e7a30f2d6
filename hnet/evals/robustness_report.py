"""The papers' robustness table: rows = models, columns = clean, the five noises on the context, their mean.

  python eval.py robustness --workdirs runs/a,runs/b [--hellaswag_file hellaswag_val.jsonl | --corpus_mc_file f]

The H-Net and BLT papers report noise robustness as multiple-choice accuracy on HellaSwag with a
perturbed context (AntSpeak, Drop, RandomCase, Repeat, UpperCase). Every model scores the same items:
a released HellaSwag jsonl, a corpus task written by `python -m hnet.evals.harness.corpus_task`, or
(without a file) items cut from the first run's held-out documents. Scoring is `eval.py mc`'s, equal to
lm-eval's on the same items; the metric is `acc_norm` unless `--metric` says otherwise. A PNG bar
chart is written beside the JSON.
"""
import os
from typing import Sequence

import numpy as np

from hnet import storage
from hnet.evals import documents, mc, mc_items
from hnet.evals.perturbations import PAPER_PERTURBATIONS
from hnet.train import runs


def items_for(loaded: runs.Loaded, hellaswag_file: str | None, corpus_mc_file: str | None,
              limit: int = -1) -> tuple[list[mc_items.MCItem], str]:
  if hellaswag_file:
    return mc_items.read_hellaswag_jsonl(hellaswag_file, limit), hellaswag_file
  if corpus_mc_file:
    return mc_items.read_corpus_jsonl(corpus_mc_file, limit), corpus_mc_file
  c = loaded.config
  texts = documents.as_text(documents.load(c.data, split=c.data.eval_split, limit=c.eval.num_documents))
  return mc.document_items(texts, c), f"{c.data.dataset}:{c.data.eval_split} ({len(texts)} documents)"


def run(workdirs: Sequence[str], *, hellaswag_file: str | None = None, corpus_mc_file: str | None = None,
        metric: str = "acc_norm", limit: int = -1, overrides: dict | None = None) -> dict:
  if metric not in mc_items.METRICS:
    raise ValueError(f"--metric {metric!r}: use one of {', '.join(mc_items.METRICS)}")
  if not workdirs:
    raise ValueError("robustness needs at least one work dir (--workdirs a,b)")
  models, items, source = [], None, None
  for workdir in workdirs:
    loaded = runs.load(workdir, overrides=overrides)
    if items is None:  # every model scores the same items
      items, source = items_for(loaded, hellaswag_file, corpus_mc_file, limit)
    suite = mc_items.score_noise_suite(items, mc.loglik_fn(loaded), perturbations=PAPER_PERTURBATIONS,
                                       targets=("context",), seed=loaded.config.eval.seed)
    scores = {"clean": suite["clean"][metric], **{t["perturbation"]: t[metric] for t in suite["tasks"]}}
    stderr = {"clean": suite["clean"][f"{metric}_stderr"],
              **{t["perturbation"]: t[f"{metric}_stderr"] for t in suite["tasks"]}}
    models.append({"workdir": workdir, "step": loaded.step, "scores": scores, "stderr": stderr,
                   "noised_mean": suite[f"noised_mean_{metric}"], "suite": suite})
  return {"metric": metric, "source": source, "num_items": len(items), "perturbations": list(PAPER_PERTURBATIONS),
          "models": models}


def rows(result: dict) -> list[dict]:
  out = []
  for m in result["models"]:
    row = {"model": f"{m['workdir']} (step {m['step']})"}
    row.update({k: f"{100 * v:.1f}" for k, v in m["scores"].items()})
    row["noised mean"] = f"{100 * m['noised_mean']:.1f}"
    row["Δ vs clean"] = f"{100 * (m['noised_mean'] - m['scores']['clean']):+.1f}"
    out.append(row)
  return out


def plot(result: dict, path: str) -> str:
  """Grouped bars: one group per column (clean, each noise, mean), one bar per model, ± one standard error."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  columns = ["clean", *result["perturbations"]]
  fig, ax = plt.subplots(figsize=(1.4 * (len(columns) + 1) + 2, 4))
  width = 0.8 / len(result["models"])
  for i, m in enumerate(result["models"]):
    values = [100 * m["scores"][c] for c in columns] + [100 * m["noised_mean"]]
    errors = [100 * (m["stderr"][c] if np.isfinite(m["stderr"][c]) else 0.0) for c in columns] + [0.0]
    ax.bar(np.arange(len(columns) + 1) + (i - (len(result["models"]) - 1) / 2) * width, values, width,
           yerr=errors, capsize=2, label=os.path.basename(os.path.normpath(m["workdir"])))
  ax.set_xticks(np.arange(len(columns) + 1), columns + ["noised mean"])
  ax.set_ylabel(f"{result['metric']} (%)")
  ax.set_title(f"{result['source']}, {result['num_items']} items")
  ax.legend(fontsize="small")
  fig.tight_layout()
  storage.makedirs(os.path.dirname(storage.resolve(path)))
  with storage.open_file(path, "wb") as f:  # local or in a bucket
    fig.savefig(f, format="png", dpi=120)
  plt.close(fig)
  return path
