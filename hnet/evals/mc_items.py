"""HellaSwag-style multiple choice: pick the true continuation of a context.

Items are built from held-out documents or read from a released-format HellaSwag jsonl, and
scored with a caller-supplied log-likelihood function with lm-eval's metrics (acc, acc_norm,
acc_bytes), optionally under a noise perturbation of the context, the choices, or both (the
BLT robustness protocol).
"""
import bisect
import dataclasses
import json
import os
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
  """One question: a context, candidate continuations, and the index of the true one.

  The model scores `delimiter + choice` after the context (lm-eval's `target_delimiter`: ' ' for
  HellaSwag; '' for items cut from documents, whose choices carry their own leading space); the
  length normalisations count the choice alone, as lm-eval does.
  """
  context: str
  choices: tuple[str, ...]
  label: int
  delimiter: str = ""


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


def mean_stderr(values: Sequence[float]) -> float:
  """Standard error of a mean, as lm-eval reports it (sample standard deviation / sqrt(n))."""
  n = len(values)
  return float(np.std(values, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")


def score_items(items: Sequence[MCItem], loglik_fn: LogLikFn, *, perturbation: str | None = None,
                perturb_target: str = "context", seed: int = 0) -> dict[str, Any]:
  """lm-eval's multiple-choice metrics, with one loglik_fn call.

  loglik_fn(contexts, continuations) gets raw UTF-8 bytes (no BOS/EOS: the caller adds them) and
  returns the total natural-log likelihood of each continuation (delimiter + choice) given its
  context. Per item, the prediction is the argmax of: the total (`acc`), the total over the choice's
  characters (`acc_norm`) or its UTF-8 bytes (`acc_bytes`), each count at least 1 so a choice emptied
  by a perturbation does not divide by zero; ties go to the first maximum (np.argmax), as in lm-eval.
  An item is noised with `perturbations.item_seed(seed, its clean context)`; its choices share it.
  """
  if perturb_target not in TARGETS:
    raise ValueError(f"perturb_target must be one of {TARGETS}, got {perturb_target!r}")
  if perturbation is not None:
    perturbations.perturb(perturbation, "", 0)  # fail early, before any work, on an unknown name
  contexts, continuations, chars, nbytes = [], [], [], []
  for item in items:
    ctx, choices = item.context, list(item.choices)
    if perturbation is not None:
      item_seed = perturbations.item_seed(seed, item.context)
      if perturb_target in ("context", "both"):
        ctx = perturbations.perturb(perturbation, ctx, item_seed)
      if perturb_target in ("continuation", "both"):
        choices = [perturbations.perturb(perturbation, ch, item_seed) for ch in choices]
    for ch in choices:
      contexts.append(ctx.encode("utf-8"))
      continuations.append((item.delimiter + ch).encode("utf-8"))
      chars.append(max(1, len(ch)))
      nbytes.append(max(1, len(ch.encode("utf-8"))))
  ll = np.asarray(loglik_fn(contexts, continuations) if items else [], dtype=np.float64)
  if ll.shape != (len(continuations),):
    raise ValueError(f"loglik_fn returned shape {ll.shape}, expected ({len(continuations)},)")
  scores = {"acc": ll, "acc_norm": ll / np.asarray(chars, np.float64), "acc_bytes": ll / np.asarray(nbytes, np.float64)}
  correct = {k: [] for k in scores}
  start = 0
  for item in items:
    for k, score in scores.items():
      correct[k].append(float(int(np.argmax(score[start:start + len(item.choices)])) == item.label))
    start += len(item.choices)
  out = {}
  for k, values in correct.items():
    out[k] = float(np.mean(values)) if values else 0.0
    out[f"{k}_stderr"] = mean_stderr(values)
  return {**out, "num_items": len(items), "perturbation": perturbation or "clean",
          "perturb_target": perturb_target if perturbation else "none"}


METRICS = ("acc", "acc_norm", "acc_bytes")


def score_noise_suite(items: Sequence[MCItem], loglik_fn: LogLikFn, *,
                      perturbations: Iterable[str] = tuple(perturbations.PERTURBATIONS),
                      targets: Iterable[str] = TARGETS, seed: int = 0) -> dict[str, Any]:
  """Clean scores plus every (perturbation, target) task, and each metric's mean over noised tasks (BLT)."""
  clean = score_items(items, loglik_fn, seed=seed)
  tasks = [score_items(items, loglik_fn, perturbation=p, perturb_target=t, seed=seed)
           for p in perturbations for t in targets]
  means = {f"noised_mean_{k}": float(np.mean([t[k] for t in tasks])) if tasks else float("nan") for k in METRICS}
  return {"clean": clean, "tasks": tasks, **means}


def _clean_hellaswag(text: str) -> str:
  """HellaSwag's clean-up, as lm-eval's `hellaswag` task does it: WikiHow [title]/[step] tags removed."""
  text = text.strip().replace(" [title]", ". ")
  text = re.sub(r"\[.*?\]", "", text)
  return text.replace("  ", " ")


def items_from_hellaswag(records: Iterable[dict[str, Any]]) -> list[MCItem]:
  """Released HellaSwag records (`ctx_a`, `ctx_b`, `activity_label`, `endings`, `label`) to items.

  The query is lm-eval's: `activity_label: ctx_a + " " + ctx_b.capitalize()`, cleaned; the choices
  are the cleaned endings after a ' ' delimiter. Records without a label (the test split) are skipped.
  """
  items = []
  for n, ex in enumerate(records):
    missing = {"ctx_a", "ctx_b", "activity_label", "endings"} - set(ex)
    if missing:
      raise ValueError(f"hellaswag record {n}: missing {sorted(missing)} (the released jsonl format)")
    if ex.get("label") in (None, ""):
      continue
    label = int(ex["label"])
    endings = tuple(_clean_hellaswag(e) for e in ex["endings"])
    if not 0 <= label < len(endings):
      raise ValueError(f"hellaswag record {n}: label {label} out of range for {len(endings)} endings")
    query = _clean_hellaswag(ex["activity_label"] + ": " + ex["ctx_a"] + " " + ex["ctx_b"].capitalize())
    items.append(MCItem(query, endings, label, delimiter=" "))
  return items


def read_jsonl(path: str, what: str) -> list[dict]:
  """The records of a jsonl file (blank lines skipped); a missing file or a bad line is one clear error."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{what} {path!r} does not exist")
  records = []
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      if line.strip():
        try:
          records.append(json.loads(line))
        except json.JSONDecodeError as e:
          raise ValueError(f"{path}:{n}: not a JSON line ({e.msg})") from None
  return records


def read_hellaswag_jsonl(path: str, limit: int = -1) -> list[MCItem]:
  """Items of a released-format HellaSwag jsonl (e.g. hellaswag_val.jsonl); all of them unless `limit`."""
  items = items_from_hellaswag(read_jsonl(path, "HellaSwag file"))
  if not items:
    raise ValueError(f"{path}: no labelled HellaSwag records")
  return items if limit < 0 else items[:limit]


def read_corpus_jsonl(path: str, limit: int = -1) -> list[MCItem]:
  """Items written by `python -m hnet.evals.harness.corpus_task` (`{"context", "choices", "label"}`, the
  choices with their leading space, so no delimiter); all of them unless `limit`."""
  items = [MCItem(r["context"], tuple(r["choices"]), int(r["label"]))
           for r in read_jsonl(path, "corpus multiple-choice file")]
  return items if limit < 0 else items[:limit]
