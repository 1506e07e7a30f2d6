"""HellaSwag-style multiple choice: pick the true continuation of a context.

Items are built from held-out documents (or converted from TFDS `hellaswag` records) and
scored with a caller-supplied log-likelihood function, optionally under a noise
perturbation of the context, the choices, or both (the BLT robustness protocol).
"""
import bisect
import dataclasses
import random
import re
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from hnet.evals import perturbations

LogLikFn = Callable[[list[bytes], list[bytes]], Sequence[float]]
TARGETS = ("context", "continuation", "both")
_WHITESPACE_WINDOW = 32  # characters searched for a word boundary around a random cut


@dataclasses.dataclass(frozen=True)
class MCItem:
  """One question: a context, candidate continuations, and the index of the true one."""
  context: str
  choices: tuple[str, ...]
  label: int


def _byte_offsets(text: str) -> list[int]:
  """offsets[k] = UTF-8 byte offset of character k; offsets[len(text)] = total bytes."""
  out = [0]
  for c in text:
    out.append(out[-1] + len(c.encode("utf-8")))
  return out


def _cut(text: str, off: list[int], context_bytes: int, continuation_bytes: int,
         rng: random.Random) -> tuple[str, str] | None:
  """A random (context, continuation) pair at character boundaries, or None if too short.

  The continuation starts at a whitespace character when one is near the random cut (so it
  reads like a HellaSwag ending, ' word ...') and the context starts after whitespace when
  possible. Context <= context_bytes; continuation is the longest run <= continuation_bytes.
  """
  n = len(text)
  lo = bisect.bisect_left(off, context_bytes)
  hi = bisect.bisect_right(off, off[n] - continuation_bytes) - 1
  if lo > hi:
    return None
  c = rng.randint(lo, hi)
  near = [k for k in range(max(lo, c - _WHITESPACE_WINDOW), min(hi, c + _WHITESPACE_WINDOW) + 1)
          if text[k].isspace() and not text[k - 1].isspace()]
  if near:
    c = min(near, key=lambda k: (abs(k - c), k))
  a = bisect.bisect_left(off, off[c] - context_bytes)
  word = [k for k in range(a, min(c, a + _WHITESPACE_WINDOW))
          if k > 0 and text[k - 1].isspace() and not text[k].isspace()]
  if word:
    a = word[0]
  e = bisect.bisect_right(off, off[c] + continuation_bytes) - 1
  return text[a:c], text[c:e]


def build_items(documents: list[str], *, num_items: int, context_bytes: int = 256,
                continuation_bytes: int = 64, num_choices: int = 4, seed: int = 0) -> list[MCItem]:
  """Up to num_items items, one per usable document (visited in a seeded random order).

  A document is usable if it has at least context_bytes + continuation_bytes UTF-8 bytes.
  Distractors are continuations of the same byte budget cut at random places in other
  documents (never the item's own), drawn from up to 2 * num_choices candidates; a candidate
  equal to an earlier choice is passed over, and an item left short of choices is skipped.
  """
  if num_items < 1 or num_choices < 2:
    raise ValueError(f"need num_items >= 1 and num_choices >= 2, got {num_items}, {num_choices}")
  if context_bytes < 1 or continuation_bytes < 4:
    raise ValueError(f"need context_bytes >= 1 and continuation_bytes >= 4 (a full character), "
                     f"got {context_bytes}, {continuation_bytes}")
  rng = random.Random(seed)
  min_bytes = context_bytes + continuation_bytes
  usable = [i for i, d in enumerate(documents) if len(d.encode("utf-8")) >= min_bytes and d.strip()]
  if len(usable) < num_choices:
    raise ValueError(f"need at least num_choices={num_choices} documents with >= {min_bytes} "
                     f"UTF-8 bytes, got {len(usable)} of {len(documents)}")
  offsets = {}  # computed lazily: a large corpus may need only a few documents

  def cut(j: int) -> tuple[str, str] | None:
    if j not in offsets:
      offsets[j] = _byte_offsets(documents[j])
    return _cut(documents[j], offsets[j], context_bytes, continuation_bytes, rng)

  items = []
  for i in rng.sample(usable, len(usable)):
    if len(items) == num_items:
      break
    pair = cut(i)
    if pair is None:
      continue
    context, true = pair
    choices = [true]
    # A bounded random set of candidate documents (sampling a range is O(k), not O(corpus)).
    picks = rng.sample(range(len(usable)), min(len(usable), 2 * num_choices + 1))
    for j in (usable[p] for p in picks if usable[p] != i):
      if len(choices) == num_choices:
        break
      alt = cut(j)
      if alt is not None and alt[1] not in choices:
        choices.append(alt[1])
    if len(choices) < num_choices:
      continue
    label = rng.randrange(num_choices)
    choices[0], choices[label] = choices[label], choices[0]
    items.append(MCItem(context, tuple(choices), label))
  if not items:
    raise ValueError(f"no items could be built from {len(documents)} documents "
                     f"(too few distinct continuations)")
  return items


def score_items(items: Sequence[MCItem], loglik_fn: LogLikFn, *, perturbation: str | None = None,
                perturb_target: str = "context", seed: int = 0) -> dict[str, Any]:
  """Accuracy of argmax length-normalised log-likelihood, with one loglik_fn call.

  loglik_fn(contexts, continuations) gets raw UTF-8 bytes (no BOS/EOS: the caller adds them)
  and returns the total natural-log likelihood of each continuation given its context.
  A choice's score is that total divided by its byte count (at least 1, so a choice emptied
  by a perturbation does not divide by zero). Ties go to the first maximum (np.argmax).
  Item k is perturbed with seed + k; all its choices share that seed.
  """
  if perturb_target not in TARGETS:
    raise ValueError(f"perturb_target must be one of {TARGETS}, got {perturb_target!r}")
  if perturbation is not None:
    perturbations.perturb(perturbation, "", 0)  # fail early, before any work, on an unknown name
  contexts, continuations = [], []
  for k, item in enumerate(items):
    ctx, choices = item.context, list(item.choices)
    if perturbation is not None:
      if perturb_target in ("context", "both"):
        ctx = perturbations.perturb(perturbation, ctx, seed + k)
      if perturb_target in ("continuation", "both"):
        choices = [perturbations.perturb(perturbation, ch, seed + k) for ch in choices]
    for ch in choices:
      contexts.append(ctx.encode("utf-8"))
      continuations.append(ch.encode("utf-8"))
  ll = np.asarray(loglik_fn(contexts, continuations) if items else [], dtype=np.float64)
  if ll.shape != (len(continuations),):
    raise ValueError(f"loglik_fn returned shape {ll.shape}, expected ({len(continuations)},)")
  score = ll / np.maximum(1, [len(c) for c in continuations])
  correct, start = [], 0
  for item in items:
    correct.append(int(np.argmax(score[start:start + len(item.choices)])) == item.label)
    start += len(item.choices)
  return {
      "accuracy": float(np.mean(correct)) if correct else 0.0,
      "num_items": len(items),
      "perturbation": perturbation or "clean",
      "perturb_target": perturb_target if perturbation else "none",
  }


def score_noise_suite(items: Sequence[MCItem], loglik_fn: LogLikFn, *,
                      perturbations: Iterable[str] = tuple(perturbations.PERTURBATIONS),
                      targets: Iterable[str] = TARGETS, seed: int = 0) -> dict[str, Any]:
  """Clean score plus every (perturbation, target) task, and the mean over noised tasks (BLT)."""
  clean = score_items(items, loglik_fn, seed=seed)
  tasks = [score_items(items, loglik_fn, perturbation=p, perturb_target=t, seed=seed)
           for p in perturbations for t in targets]
  mean = float(np.mean([t["accuracy"] for t in tasks])) if tasks else float("nan")
  return {"clean": clean, "tasks": tasks, "noised_mean_accuracy": mean}


def _as_str(x: Any) -> str:
  """TFDS text features arrive as bytes under tfds.as_numpy."""
  return x.decode("utf-8") if isinstance(x, (bytes, np.bytes_)) else str(x)


def _clean_hellaswag(text: str) -> str:
  """The usual HellaSwag clean-up (lm-eval-harness): WikiHow [title]/[step] tags removed."""
  text = text.strip().replace(" [title]", ". ")
  text = re.sub(r"\[.*?\]", "", text)
  return text.replace("  ", " ")


def items_from_hellaswag(examples: Iterable[dict[str, Any]], *, clean: bool = True) -> list[MCItem]:
  """TFDS `hellaswag` records (context, endings, label) to items.

  Each ending becomes ' ' + ending (the context has no trailing space). Records with
  label < 0 (the unlabelled test split) are skipped; any other out-of-range label raises.
  """
  fix = _clean_hellaswag if clean else (lambda s: s)
  items = []
  for n, ex in enumerate(examples):
    label = int(ex["label"])
    endings = tuple(" " + fix(_as_str(e)) for e in ex["endings"])
    if label < 0:
      continue
    if label >= len(endings):
      raise ValueError(f"hellaswag record {n}: label {label} out of range for {len(endings)} endings")
    items.append(MCItem(fix(_as_str(ex["context"])), endings, label))
  return items
