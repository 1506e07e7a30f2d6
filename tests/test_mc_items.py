"""Multiple-choice items: construction from documents, lm-eval's metrics, released HellaSwag jsonl."""
import os
import random

import numpy as np
import pytest

from hnet.evals import mc_items as mc, perturbations

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
  assert {k: res[k] for k in ("acc", "acc_norm", "acc_bytes", "acc_stderr")} == {
      "acc": 1.0, "acc_norm": 1.0, "acc_bytes": 1.0, "acc_stderr": 0.0}
  assert (res["num_items"], res["perturbation"], res["perturb_target"]) == (10, "clean", "none")
  assert calls == [40]


def test_constant_picks_first_choice():
  items = mc.build_items(DOCS, num_items=12, **KW)
  res = mc.score_items(items, lambda c, x: [0.0] * len(c))
  correct = [float(it.label == 0) for it in items]
  assert res["acc"] == pytest.approx(np.mean(correct))
  assert res["acc_stderr"] == pytest.approx(np.std(correct, ddof=1) / np.sqrt(len(correct)))  # as lm-eval


def test_length_normalisations_count_the_choice_without_its_delimiter():
  # Totals -4 and -3: raw argmax picks 'bb'; per character / byte of the choice (-1 vs -1.5) picks 'aaaa'.
  item = mc.MCItem("ctx", ("aaaa", "bb"), 0, delimiter=" ")
  seen = []
  res = mc.score_items([item], lambda c, x: seen.append(x) or [-4.0, -3.0])
  assert (res["acc"], res["acc_norm"], res["acc_bytes"]) == (0.0, 1.0, 1.0)
  assert seen == [[b" aaaa", b" bb"]]  # the model scores delimiter + choice
  # Characters and bytes differ outside ASCII: 'éé' is 2 characters, 4 bytes.
  item = mc.MCItem("ctx", ("éé", "abc"), 0)
  res = mc.score_items([item], lambda c, x: [-3.9, -3.0])
  assert (res["acc_norm"], res["acc_bytes"]) == (0.0, 1.0)


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


def test_an_items_noise_depends_on_its_context_not_its_position():
  items = mc.build_items(DOCS, num_items=3, **KW)
  seen = []
  fn = lambda c, x: seen.append(c) or [0.0] * len(c)  # noqa: E731
  mc.score_items(items, fn, perturbation="drop", seed=5)
  mc.score_items(items[::-1], fn, perturbation="drop", seed=5)
  k = len(items[0].choices)
  assert seen[0][:k] == seen[1][-k:]  # item 0 first, then last: the same noised context
  assert seen[0][0] == perturbations.perturb("drop", items[0].context, perturbations.item_seed(5, items[0].context)).encode()


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
  assert res["clean"]["acc"] == 1.0 and len(res["tasks"]) == 6
  assert all(0.0 <= res[f"noised_mean_{k}"] <= 1.0 for k in mc.METRICS)


def test_items_from_released_hellaswag_use_lm_evals_query():
  records = [
      {"ctx_a": "A man is sitting on a roof.", "ctx_b": "he", "activity_label": "Roofing", "label": 3,
       "endings": ["is using wrap.", "is ripping tiles off.", "holds a cube.", "starts pulling."]},
      {"ctx_a": "[header] How to x [title] Do y.", "ctx_b": "", "activity_label": "Home", "endings": ["a", "b"],
       "label": "0"},
      {"ctx_a": "unlabelled", "ctx_b": "", "activity_label": "x", "endings": ["a", "b"], "label": ""},
  ]
  items = mc.items_from_hellaswag(records)
  assert len(items) == 2
  assert items[0] == mc.MCItem("Roofing: A man is sitting on a roof. He",
                               ("is using wrap.", "is ripping tiles off.", "holds a cube.", "starts pulling."), 3,
                               delimiter=" ")
  assert "[" not in items[1].context and items[1].label == 0
  with pytest.raises(ValueError, match="label 4 out of range"):
    mc.items_from_hellaswag([{**records[0], "label": 4}])
  with pytest.raises(ValueError, match="released jsonl format"):
    mc.items_from_hellaswag([{"context": "c", "endings": ["a"] * 4, "label": 0}])  # TFDS keys


def test_read_hellaswag_jsonl_reads_every_item_and_names_bad_lines(tmp_path):
  fixture = os.path.join(os.path.dirname(__file__), "fixtures", "hellaswag_tiny.jsonl")
  items = mc.read_hellaswag_jsonl(fixture)
  assert len(items) == 8 and all(len(it.choices) == 4 for it in items)
  # WikiHow tags gone; ctx_b.capitalize() lower-cases "[step] Sand" to "[step] sand", as in lm-eval
  assert items[4].context == "Painting a fence: How to paint a fence. Prepare the wood. sand"
  assert len(mc.read_hellaswag_jsonl(fixture, limit=3)) == 3
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"ctx_a": "x"}\nnot json\n', encoding="utf-8")
  with pytest.raises(ValueError, match="bad.jsonl:2: not a JSON line"):
    mc.read_hellaswag_jsonl(str(bad))
