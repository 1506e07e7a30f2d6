"""Noise robustness: bits/byte on a clean continuation given a (noised) context.

Pairs (context, continuation) are cut from held-out documents with the multiple-choice
item builder (same seeded, word-aligned cuts; the distractor is unused). For every
perturbation of hnet.evals.perturbations, item k's context is noised with seed + k; the
continuation stays clean. Each row holds BOS + context + continuation and only continuation
bytes are scored, so every task scores the same bytes and the degradation is the bits/byte
difference to the clean context.

The context is cut before noising: AntSpeak doubles a text and Repeat lengthens it, so a noised
context cut from the left to fit the row would hold less of the text than the clean one, and
the Δ would mix noise with lost context. Item k's clean context is shortened (from the left, at a
word) until its clean form and every perturbation's noised form fit the row; every task then
sees the same clean content, noised or not.
"""
# pylint: disable=invalid-name
from typing import Sequence

from hnet.evals import mc_items, packing, scoring
from hnet.evals.perturbations import perturb
from hnet.train.runs import Loaded


def budgets(c) -> tuple[int, int]:
  """(context_bytes, continuation_bytes) from eval.*; context -1 = the rest of a data.seq_len row."""
  cont = c.eval.continuation_bytes
  ctx = c.eval.context_bytes if c.eval.context_bytes > 0 else c.data.seq_len - 1 - cont
  if cont < 4 or ctx < 1 or 1 + ctx + cont > c.data.seq_len:
    raise ValueError(f"eval.context_bytes={c.eval.context_bytes} and eval.continuation_bytes={cont} must fit "
                     f"a row: 1 + context + continuation <= data.seq_len={c.data.seq_len}, continuation >= 4 "
                     f"(e.g. --config.eval.continuation_bytes={max(4, c.data.seq_len // 4)})")
  return ctx, cont


def make_pairs(texts: Sequence[str], c) -> list[tuple[str, str]]:
  """Up to eval.num_items (context, continuation) pairs from documents, deterministic in eval.seed."""
  ctx, cont = budgets(c)
  items = mc_items.build_items(list(texts), num_items=c.eval.num_items, context_bytes=ctx,
                               continuation_bytes=cont, num_choices=2, seed=c.eval.seed)
  return [(it.context, it.choices[it.label]) for it in items]


def common_context(context: str, perturbations: Sequence[str], seed: int, budget: int) -> str:
  """A suffix of `context`, starting at a word where it can, whose clean and noised forms (seeded `seed`)
  all fit `budget` UTF-8 bytes; shortened in proportion to the overflow until they do."""
  while context:
    longest = max(len(t.encode("utf-8")) for t in [context, *(perturb(p, context, seed) for p in perturbations)])
    if longest <= budget:
      return context
    cut = len(context) - min(len(context) * budget // longest, len(context) - 1)  # >= 1: shorter every time
    rest = context[cut:]
    if not context[cut - 1].isspace() and " " in rest[:-1]:  # cut inside a word: start at the next one
      rest = rest[rest.index(" ") + 1:]
    context = rest
  return context


def segments(contexts: Sequence[bytes], continuations: Sequence[bytes], seq_len: int) -> list:
  """BOS + context + continuation per pair, the context cut from the left to fit seq_len + 1 tokens."""
  out = []
  for ctx, cont in zip(contexts, continuations):
    cont = packing.right_truncate(cont, seq_len - 1)
    out.append(packing.continuation_segment(ctx, cont, seq_len - 1 - len(cont)))
  return out


def evaluate(loaded: Loaded, pairs: Sequence[tuple[str, str]],
             perturbations: Sequence[str] | None = None) -> dict:
  """{'clean': {...}, 'tasks': [{'perturbation', 'bits_per_byte', 'degradation', 'ratio'}, ...]}."""
  c = loaded.config
  perturbations = list(c.eval.perturbations if perturbations is None else perturbations)
  for p in perturbations:
    perturb(p, "", 0)  # unknown names fail before any work
  scorer = scoring.Scorer(loaded)
  B = loaded.batch_size(c.eval.batch_size)
  continuations = [cont.encode("utf-8") for _, cont in pairs]
  # Room for the context in a row: seq_len + 1 tokens hold BOS, context and continuation.
  budgets_k = [c.data.seq_len - 1 - len(packing.right_truncate(cont, c.data.seq_len - 1)) for cont in continuations]
  clean = [common_context(ctx, perturbations, c.eval.seed + k, budgets_k[k]) for k, (ctx, _) in enumerate(pairs)]
  results = {}
  for name in ["clean", *perturbations]:
    contexts = [(ctx if name == "clean" else perturb(name, ctx, c.eval.seed + k)).encode("utf-8")
                for k, ctx in enumerate(clean)]
    segs = segments(contexts, continuations, c.data.seq_len)
    out = scoring.run(scorer, packing.batches(packing.pack(segs, c.data.seq_len), B))
    shown = sum(int((mask == 0).sum()) for _, mask in segs) / max(len(segs), 1)  # context bytes the model saw
    results[name] = {"perturbation": name, "bits_per_byte": out["bits_per_byte"], "target_bytes": out["target_bytes"],
                     "context_bytes": shown}
  clean = results.pop("clean")
  for r in results.values():
    r["degradation"] = r["bits_per_byte"] - clean["bits_per_byte"]
    r["ratio"] = r["bits_per_byte"] / clean["bits_per_byte"]
  tasks = list(results.values())
  mean = sum(r["bits_per_byte"] for r in tasks) / len(tasks) if tasks else float("nan")
  return {"step": loaded.step, "num_pairs": len(pairs), "clean": clean, "tasks": tasks,
          "noised_mean_bits_per_byte": mean}


def rows(result: dict) -> list[dict]:
  clean = result["clean"]["bits_per_byte"]
  out = [{"context": "clean", "bits/byte": f"{clean:.4f}", "Δ vs clean": "", "× clean": "",
          "mean context bytes": f"{result['clean']['context_bytes']:.0f}"}]
  for r in result["tasks"]:
    out.append({"context": r["perturbation"], "bits/byte": f"{r['bits_per_byte']:.4f}",
                "Δ vs clean": f"{r['degradation']:+.4f}", "× clean": f"{r['ratio']:.3f}",
                "mean context bytes": f"{r['context_bytes']:.0f}"})
  return out
