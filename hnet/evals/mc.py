"""Multiple-choice continuation accuracy with a restored model, clean and per perturbation.

Items come from held-out documents (`mc_items.build_items`) or from a released-format HellaSwag
jsonl (`mc_items.read_hellaswag_jsonl`, lm-eval's query format). The log-likelihood function
packs every (context, choice) pair into rows of data.seq_len (BOS + context + choice, the
context cut from the left to fit) and runs the jitted scorer on batches of a fixed shape,
so the whole suite compiles once.
"""
# pylint: disable=invalid-name
from typing import Sequence


from hnet.evals import mc_items, packing, robustness, scoring
from hnet.train.runs import Loaded


def loglik_fn(loaded: Loaded, with_greedy: bool = False, progress: str | None = None) -> mc_items.LogLikFn:
  """Batched (contexts, continuations) -> log-likelihood (nats) of each continuation; with `with_greedy`,
  also whether every continuation byte is the model's argmax (lm-eval's `is_greedy`)."""
  c = loaded.config
  scorer = scoring.Scorer(loaded)
  B = loaded.batch_size(c.eval.batch_size)

  def fn(contexts: Sequence[bytes], continuations: Sequence[bytes]):
    packed = packing.pack(robustness.segments(contexts, continuations, c.data.seq_len), c.data.seq_len)
    if with_greedy:
      nll, greedy = scoring.segment_nll_and_greedy(scorer, packed, B, progress)
      return -nll, greedy
    return -scoring.segment_nll(scorer, packed, B, progress)

  return fn


def document_items(texts: Sequence[str], c) -> list[mc_items.MCItem]:
  ctx, cont = robustness.budgets(c)
  return mc_items.build_items(list(texts), num_items=c.eval.num_items, context_bytes=ctx,
                              continuation_bytes=cont, num_choices=c.eval.mc_choices, seed=c.eval.seed)


def evaluate(loaded: Loaded, items: Sequence[mc_items.MCItem],
             perturbations: Sequence[str] | None = None) -> dict:
  c = loaded.config
  perturbations = list(c.eval.perturbations if perturbations is None else perturbations)
  out = mc_items.score_noise_suite(items, loglik_fn(loaded), perturbations=perturbations,
                                   targets=tuple(c.eval.mc_targets), seed=c.eval.seed)
  return {"step": loaded.step, "num_items": len(items),
          "num_choices": max((len(it.choices) for it in items), default=0), **out}


def _cell(task: dict, metric: str) -> str:
  return f"{task[metric]:.4f} ± {task[metric + '_stderr']:.4f}"


def rows(result: dict) -> list[dict]:
  """One row per task: acc and acc_norm (lm-eval's HellaSwag metric) ± standard error, acc_bytes."""
  def row(name: str, task: dict) -> dict:
    return {"task": name, "acc": _cell(task, "acc"), "acc_norm": _cell(task, "acc_norm"),
            "acc_bytes": _cell(task, "acc_bytes"), "items": task["num_items"]}
  out = [row("clean", result["clean"])]
  for t in result["tasks"]:
    out.append(row(f"{t['perturbation']} ({t['perturb_target']})", t))
  if result["tasks"]:
    out.append({"task": "noised mean", "acc": f"{result['noised_mean_acc']:.4f}",
                "acc_norm": f"{result['noised_mean_acc_norm']:.4f}",
                "acc_bytes": f"{result['noised_mean_acc_bytes']:.4f}", "items": result["num_items"]})
  return out
