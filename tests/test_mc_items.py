"""Multiple-choice items: construction from documents, scoring, TFDS hellaswag conversion."""
import random

import numpy as np
import pytest

from hnet.evals import mc_items as mc

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi pi rho".split()


def _docs(n=12, words=120, seed=0):
  rng = random.Random(seed)
  return [f"doc{d} " + " ".join(rng.choice(WORDS) for _ in range(words)) for d in range(n)]


DOCS = _docs()
KW = dict(context_bytes=120, continuation_bytes=40)


def _where(text, docs):
  return {i for i, d in enumerate(docs) if text in d}


def test_deterministic():
  a = mc.build_items(DOCS, num_items=6, seed=1, **KW)
  assert a == mc.build_items(DOCS, num_items=6, seed=1, **KW)
  assert a != mc.build_items(DOCS, num_items=6, seed=2, **KW)


def test_label_and_distractors():
  # Unique tokens per document make the source of every string identifiable.
  docs = [" ".join(f"w{d}_{k}" for k in range(80)) for d in range(8)]
  items = mc.build_items(docs, num_items=8, **KW)
  assert len(items) == 8
  labels = set()
  for it in items:
    assert len(it.choices) == 4 and len(set(it.choices)) == 4
    src = _where(it.context, docs)
    assert len(src) == 1
    (d,) = src
    assert it.context + it.choices[it.label] in docs[d]  # label points at the true continuation
    for k, ch in enumerate(it.choices):
      if k != it.label:
        assert d not in _where(ch, docs) and len(_where(ch, docs)) == 1
      assert 36 <= len(ch.encode()) <= 40
    assert len(it.context.encode()) <= 120
    labels.add(it.label)
  assert len(labels) > 1  # positions are shuffled


def test_multibyte_cuts():
  docs = [("日本語のテキスト " * 30) + str(d) for d in range(4)] + [("Καλημέρα κόσμε " * 30)] * 2
  for it in mc.build_items(docs, num_items=6, num_choices=3, **KW):
    assert it.context and all(it.choices)
    assert len(it.choices[it.label].encode()) > 36


def test_too_few_documents():
  with pytest.raises(ValueError, match="at least num_choices=4 documents"):
    mc.build_items(DOCS[:3] + ["short"] * 5, num_items=2, **KW)


def test_no_items_when_all_continuations_equal():
  with pytest.raises(ValueError, match="no items"):
    mc.build_items(["ab" * 200] * 5, num_items=2, **KW)


def _oracle(items):
  truth = {(it.context.encode(), it.choices[it.label].encode()) for it in items}
  calls = []

  def loglik(contexts, continuations):
    calls.append(len(contexts))
    return [-1.0 if (c, x) in truth else -50.0 * len(x)
            for c, x in zip(contexts, continuations)]
  return loglik, calls


def test_oracle_scores_one_in_one_call():
  items = mc.build_items(DOCS, num_items=10, **KW)
  fn, calls = _oracle(items)
  res = mc.score_items(items, fn)
  assert res == {"accuracy": 1.0, "num_items": 10, "perturbation": "clean", "perturb_target": "none"}
  assert calls == [40]


def test_constant_picks_first_choice():
  items = mc.build_items(DOCS, num_items=12, **KW)
  res = mc.score_items(items, lambda c, x: [0.0] * len(c))
  assert res["accuracy"] == pytest.approx(np.mean([it.label == 0 for it in items]))


def test_length_normalisation():
  item = mc.MCItem("ctx", (" aaaa", " bb"), 0)
  # Totals -4 and -3: raw argmax picks 'bb', per-byte (-0.8 vs -1.0) picks 'aaaa'.
  res = mc.score_items([item], lambda c, x: [-4.0, -3.0])
  assert res["accuracy"] == 1.0


@pytest.mark.parametrize("target", mc.TARGETS)
def test_perturbation_targets(target):
  items = mc.build_items(DOCS, num_items=3, **KW)
  seen = {}

  def fn(contexts, continuations):
    seen["c"], seen["x"] = contexts, continuations
    return [0.0] * len(contexts)
  mc.score_items(items, fn)
  clean = dict(seen)
  res = mc.score_items(items, fn, perturbation="uppercase", perturb_target=target)
  assert res["perturbation"] == "uppercase" and res["perturb_target"] == target
  assert (seen["c"] != clean["c"]) == (target in ("context", "both"))
  assert (seen["x"] != clean["x"]) == (target in ("continuation", "both"))
  if target != "continuation":
    assert seen["c"][0] == items[0].context.upper().encode()


def test_seeded_perturbation_is_deterministic():
  items = mc.build_items(DOCS, num_items=3, **KW)
  out = []
  for _ in range(2):
    mc.score_items(items, lambda c, x: out.append(c) or [0.0] * len(c), perturbation="drop", seed=5)
  assert out[0] == out[1]


def test_score_errors():
  items = mc.build_items(DOCS, num_items=2, **KW)
  with pytest.raises(ValueError, match="perturb_target"):
    mc.score_items(items, lambda c, x: [0.0] * len(c), perturbation="drop",
                   perturb_target="prompt")
  with pytest.raises(ValueError, match="known:"):
    mc.score_items(items, lambda c, x: [0.0] * len(c), perturbation="nope")
  with pytest.raises(ValueError, match="loglik_fn returned"):
    mc.score_items(items, lambda c, x: [0.0])


def test_noise_suite():
  items = mc.build_items(DOCS, num_items=4, **KW)
  fn, _ = _oracle(items)
  res = mc.score_noise_suite(items, fn, perturbations=["uppercase", "drop"])
  assert res["clean"]["accuracy"] == 1.0 and len(res["tasks"]) == 6
  assert 0.0 <= res["noised_mean_accuracy"] <= 1.0


def test_items_from_hellaswag():
  records = [
      {"context": b"A man is sitting on a roof. he", "label": np.int32(3),
       "activity_label": b"Roof", "split_type": b"indomain",
       "endings": np.array([b"is using wrap.", b"is ripping tiles off.", b"holds a cube.",
                            b"starts pulling."])},
      {"context": "[header] How to x [title] Do y.", "endings": ["a", "b", "c", "d"], "label": 0},
      {"context": "unlabelled", "endings": ["a", "b", "c", "d"], "label": -1},
  ]
  items = mc.items_from_hellaswag(records)
  assert len(items) == 2
  endings = (" is using wrap.", " is ripping tiles off.", " holds a cube.", " starts pulling.")
  assert items[0] == mc.MCItem("A man is sitting on a roof. he", endings, 3)
  assert "[" not in items[1].context and items[1].label == 0
  with pytest.raises(ValueError, match="label 4 out of range"):
    mc.items_from_hellaswag([{"context": "c", "endings": ["a"] * 4, "label": 4}])
