"""Multiple-choice continuation accuracy with a restored model, clean and per perturbation.

Items come from held-out documents (`mc_items.build_items`) or from a locally
prepared TFDS `hellaswag` (array_record, under the data dir). The log-likelihood function
packs every (context, choice) pair into rows of data.seq_len (BOS + context + choice, the
context cut from the left to fit) and runs the jitted scorer on batches of a fixed shape,
so the whole suite compiles once.
"""
# pylint: disable=invalid-name
from typing import Sequence

import numpy as np

from hnet.evals import mc_items, packing, robustness, scoring
from hnet.evals.loading import Loaded


def loglik_fn(loaded: Loaded) -> mc_items.LogLikFn:
  """Batched (contexts, continuations) -> log-likelihood (nats) of each continuation."""
  c = loaded.config
  scorer = scoring.Scorer(loaded)
  B = loaded.batch_size(c.eval.batch_size)

  def fn(contexts: Sequence[bytes], continuations: Sequence[bytes]) -> np.ndarray:
    packed = packing.pack(robustness.segments(contexts, continuations, c.data.seq_len), c.data.seq_len)
    return -scoring.segment_nll(scorer, packed, B)

  return fn


def document_items(texts: Sequence[str], c) -> list[mc_items.MCItem]:
  ctx, cont = robustness.budgets(c)
  return mc_items.build_items(list(texts), num_items=c.eval.num_items, context_bytes=ctx,
                              continuation_bytes=cont, num_choices=c.eval.mc_choices, seed=c.eval.seed)


def hellaswag_items(data_cfg, split: str, limit: int) -> list[mc_items.MCItem]:
  """Items from TFDS `hellaswag` prepared (array_record) under the data dir."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from tensorflow_datasets.text import hellaswag  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  from hnet.data import builders  # pylint: disable=import-outside-toplevel
  data_dir = builders.data_dir(data_cfg)
  builder = tfds.builder("hellaswag", data_dir=data_dir)
  try:
    source = builder.as_data_source(split=split)
  except Exception as e:  # pylint: disable=broad-except
    raise FileNotFoundError(
        f"TFDS hellaswag ({split}) is not prepared in array_record format under {data_dir} "
        f"({type(e).__name__}); prepare it once with: python -c \"import tensorflow_datasets as tfds; "
        f"tfds.builder('hellaswag', data_dir='{data_dir}', file_format='array_record').download_and_prepare()\""
    ) from None
  n = len(source) if limit < 0 else min(len(source), 4 * limit)  # the test split has no labels
  items = mc_items.items_from_hellaswag(source[i] for i in range(n))
  return items if limit < 0 else items[:limit]


def evaluate(loaded: Loaded, items: Sequence[mc_items.MCItem],
             perturbations: Sequence[str] | None = None) -> dict:
  c = loaded.config
  perturbations = list(c.eval.perturbations if perturbations is None else perturbations)
  out = mc_items.score_noise_suite(items, loglik_fn(loaded), perturbations=perturbations,
                                   targets=tuple(c.eval.mc_targets), seed=c.eval.seed)
  return {"step": loaded.step, "num_items": len(items),
          "num_choices": max((len(it.choices) for it in items), default=0), **out}


def rows(result: dict) -> list[dict]:
  out = [{"task": "clean", "accuracy": f"{result['clean']['accuracy']:.4f}", "items": result["num_items"]}]
  for t in result["tasks"]:
    out.append({"task": f"{t['perturbation']} ({t['perturb_target']})", "accuracy": f"{t['accuracy']:.4f}",
                "items": t["num_items"]})
  if result["tasks"]:
    out.append({"task": "noised mean", "accuracy": f"{result['noised_mean_accuracy']:.4f}",
                "items": result["num_items"]})
  return out

