"""lm-evaluation-harness integration (hnet/evals/harness) on a tiny trained run, offline.

lm-eval's own evaluator runs the `hnet` model on the project's HellaSwag-format fixture
(tests/fixtures/hellaswag_tiny.jsonl, written for these tests, not taken from the dataset), clean and
noised; its answers must equal the project's own scorer, `eval.py mc` and `eval.py bpb`.
"""
# pylint: disable=invalid-name
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np
import optax
import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # nothing here may reach a hub
os.environ.setdefault("HF_HUB_OFFLINE", "1")
lm_eval = pytest.importorskip("lm_eval")  # the test extra installs it; a bare install skips these tests
from lm_eval.tasks import TaskManager  # noqa: E402

from hnet import BOS_ID  # noqa: E402
from hnet.evals import bpb, commands, documents, mc_items, perturbations  # noqa: E402
from hnet.evals.harness import TASKS_DIR, corpus_task, tasks  # noqa: E402
from hnet.evals.harness.model import HNetEvalLM, cut_at_stops, generation_settings  # noqa: E402
from hnet.model.loss import LN2  # noqa: E402
from tests.conftest import xla_flags  # noqa: E402
from tests.helpers import forward, load_config  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "hellaswag_tiny.jsonl")


@pytest.fixture(scope="module")
def workdir(tiny_hnet_run):
  """The shared 2-step tiny hnet_1stage run (conftest)."""
  return tiny_hnet_run[0]


@pytest.fixture(scope="module")
def lm(workdir):
  return HNetEvalLM(workdir=workdir, batch_size=8)


def _requests(*args_list):
  return [SimpleNamespace(args=args) for args in args_list]


def _direct_loglik(loaded, context: bytes, continuation: bytes) -> tuple[float, bool]:
  """The continuation's log-likelihood and greediness from one model call on one unpacked row."""
  row = np.frombuffer(bytes([BOS_ID]) + context + continuation, np.uint8)
  R = loaded.config.data.seq_len + 1  # the row length scoring uses: the same chunk capacity
  tokens, seg = np.zeros((8, R), np.int32), np.zeros((8, R), np.int32)  # padding: segment 0
  tokens[0, :len(row)], seg[0, :len(row)] = row, 1
  logits, _ = forward(loaded.model, jnp.asarray(tokens[:, :-1]), jnp.asarray(seg[:, :-1]))
  nll = np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(tokens[:, 1:])))[0]
  greedy = np.asarray(jnp.argmax(logits, -1))[0] == tokens[0, 1:]
  span = slice(len(context), len(row) - 1)
  return -float(nll[span].sum()), bool(greedy[span].all())


def test_loglikelihood_equals_a_direct_forward_per_item(lm):
  pairs = [("A man sprays water on a car. he", " scrubs the hood."), ("Ünïcödé: 日本", "語 text"), ("", " alone")]
  got = lm.loglikelihood(_requests(*pairs))
  for (ctx, cont), (ll, greedy) in zip(pairs, got):
    want_ll, want_greedy = _direct_loglik(lm.loaded, ctx.encode(), cont.encode())
    assert ll == pytest.approx(want_ll, abs=1e-5, rel=1e-5) and greedy == want_greedy
  # The model's own greedy bytes are greedy: is_greedy is True for exactly that continuation.
  greedy_text = lm.generate_until(_requests(("The ", {"until": [], "max_gen_toks": 6})))[0]
  if greedy_text and greedy_text.encode("utf-8") == _greedy_bytes(lm, b"The ", len(greedy_text.encode())):
    assert lm.loglikelihood(_requests(("The ", greedy_text)))[0][1] is True


def _greedy_bytes(lm, prompt: bytes, n: int) -> bytes:
  from hnet.evals import sampling  # pylint: disable=import-outside-toplevel
  return sampling.run(lm.loaded, [prompt], max_bytes=n, temperature=0.0, raw=True)["raw_outputs"][0]


def test_rolling_loglikelihood_equals_eval_py_bpb(workdir, tmp_path):
  texts = ["The quick brown fox jumps over the lazy dog.", "x" * 170, "Ünïcödé and 日本語 bytes."]
  path = tmp_path / "docs.jsonl"
  path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
  with_eos = HNetEvalLM(workdir=workdir, batch_size=8, score_eos=True)
  docs = [d.decode("utf-8") for d in documents.from_file(str(path), with_eos.loaded.config.data)]
  assert docs == texts
  rolling = with_eos.loglikelihood_rolling(_requests(*[(t,) for t in texts]))
  reference = bpb.evaluate(with_eos.loaded, text_file=str(path))
  assert reference["target_bytes"] == sum(len(t.encode()) + 1 for t in texts)  # bytes + EOS per document
  assert -sum(rolling) / LN2 / reference["target_bytes"] == pytest.approx(reference["bits_per_byte"], rel=1e-5)
  # Without the end-of-document byte (the harness's convention), each text is scored on its own bytes.
  no_eos = HNetEvalLM(workdir=workdir, batch_size=8).loglikelihood_rolling(_requests(*[(t,) for t in texts]))
  assert all(a > b for a, b in zip(no_eos, rolling))


def test_lm_eval_hellaswag_clean_and_noised_equal_eval_py_mc(lm):
  task_manager = TaskManager(include_path=TASKS_DIR, include_defaults=False,  # lm-eval's own tasks: not needed
                             metadata={"hellaswag_file": FIXTURE})
  out = lm_eval.simple_evaluate(model=lm, tasks=["hellaswag_local", "hellaswag_local_antspeak",
                                                 "hellaswag_local_drop_both"],
                                task_manager=task_manager, bootstrap_iters=100, log_samples=False)
  results = out["results"]
  result, rows, _ = commands.run("mc", lm.loaded, commands.Options(hellaswag_file=FIXTURE))
  assert result["num_items"] == 8 and result["num_choices"] == 4 and rows[0]["task"] == "clean"
  ours = {"hellaswag_local": result["clean"]}
  ours.update({f"hellaswag_local_{t['perturbation']}": t for t in result["tasks"]})
  both = mc_items.score_items(mc_items.read_hellaswag_jsonl(FIXTURE), _loglik(lm), perturbation="drop",
                              perturb_target="both")
  ours["hellaswag_local_drop_both"] = both
  for task in ("hellaswag_local", "hellaswag_local_antspeak", "hellaswag_local_drop_both"):
    for metric in ("acc", "acc_norm", "acc_bytes"):
      assert results[task][f"{metric},none"] == pytest.approx(ours[task][metric]), (task, metric)
    assert results[task]["acc_norm_stderr,none"] == pytest.approx(ours[task]["acc_norm_stderr"])


def _loglik(lm):
  from hnet.evals import mc  # pylint: disable=import-outside-toplevel
  return mc.loglik_fn(lm.loaded)


def test_the_noised_task_perturbs_what_eval_py_mc_perturbs():
  from hnet.evals.harness.noised import NoisedTask  # pylint: disable=import-outside-toplevel
  doc = {"ctx_a": "A girl rides a bike.", "ctx_b": "she", "activity_label": "Riding", "endings": ["a b", "c d"],
         "label": "0"}
  manager = TaskManager(include_path=TASKS_DIR, include_defaults=False, metadata={"hellaswag_file": FIXTURE})
  noised = _only_task(manager.load(["hellaswag_local_repeat_both"]))
  assert isinstance(noised, NoisedTask) and noised.perturbation == "repeat" and noised.perturb_target == "both"
  [item] = mc_items.items_from_hellaswag([doc])
  seed = perturbations.item_seed(0, item.context)
  processed = noised.config.process_docs(_as_dataset([doc]))[0]
  assert noised.doc_to_text(processed) == perturbations.perturb("repeat", item.context, seed)
  assert noised.doc_to_choice(processed) == [perturbations.perturb("repeat", c, seed) for c in item.choices]


def _only_task(loaded):
  found = list(_walk(loaded))
  assert len(found) == 1, found
  return found[0]


def _walk(obj):
  from lm_eval.api.task import Task  # pylint: disable=import-outside-toplevel
  if isinstance(obj, Task):
    yield obj
  elif isinstance(obj, dict):
    for v in obj.values():
      yield from _walk(v)
  elif isinstance(obj, (list, tuple)):
    for v in obj:
      yield from _walk(v)


def _as_dataset(records):
  import datasets  # pylint: disable=import-outside-toplevel
  return datasets.Dataset.from_list(records)


def test_generate_until_stops_at_the_stop_sequences(lm):
  prompts = ["The ", "Once upon"]
  full = lm.generate_until(_requests(*[(p, {"until": [], "max_gen_toks": 12}) for p in prompts]))
  assert all(len(t.encode()) <= 12 for t in full)
  stop = full[0][2:4] or "e"
  cut = lm.generate_until(_requests((prompts[0], {"until": [stop], "max_gen_toks": 12})))[0]
  assert cut == full[0][:full[0].find(stop)] if stop in full[0] else cut == full[0]
  assert cut_at_stops(b"abc\n\ndef", ("\n\n", "c")) == "ab" and cut_at_stops(b"ab\xff", ()) == "ab"
  assert generation_settings({"until": "\n", "max_gen_toks": 5}, 256) == (("\n",), 5, 0.0, 0, 1.0)
  assert generation_settings({"do_sample": True, "temperature": 0.7}, 256)[2] == 0.7
  with pytest.raises(ValueError, match="temperature"):
    generation_settings({"do_sample": True, "temperature": -1}, 256)


def test_model_args_errors_are_one_line(workdir):
  with pytest.raises(ValueError, match="unknown key"):
    HNetEvalLM(workdir=workdir, pretrained="gpt2")
  with pytest.raises(ValueError, match="workdir="):
    HNetEvalLM()
  with pytest.raises(ValueError, match="no such key"):
    HNetEvalLM(workdir=workdir, **{"eval.bpb_batchez": 2})


def test_shipped_task_files_are_the_generated_ones():
  shipped = {f: open(os.path.join(TASKS_DIR, f), encoding="utf-8").read()
             for f in os.listdir(TASKS_DIR) if f.endswith(".yaml")}
  assert shipped == tasks.task_files()  # regenerate with: python -m hnet.evals.harness.tasks
  for p in perturbations.PAPER_PERTURBATIONS:
    assert f"  - hellaswag_{p}\n" in shipped["hellaswag_noised.yaml"]
  assert "class: !function hnet.evals.harness.noised.NoisedTask" in shipped["hnet_corpus_mc_typo_choices.yaml"]


def test_the_command_line_runs_offline_from_local_files(workdir, tmp_path):
  corpus = tmp_path / "corpus_mc.jsonl"
  c = load_config("hnet_1stage")
  c.data.data_dir = str(tmp_path / "tfds")
  c.eval.continuation_bytes, c.eval.num_documents = 16, 64
  assert corpus_task.write(str(corpus), c, num_items=5) == 5
  item = json.loads(corpus.read_text(encoding="utf-8").splitlines()[0])
  assert set(item) == {"context", "choices", "label"} and len(item["choices"]) == c.eval.mc_choices
  env = dict(os.environ, XLA_FLAGS=xla_flags(1), HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
  proc = subprocess.run(
      [sys.executable, "-m", "hnet.evals.harness", "--model", "hnet", "--model_args", f"workdir={workdir}",
       "--tasks", "hellaswag_local", "hnet_corpus_mc_uppercase", "--hellaswag_file", FIXTURE,
       "--corpus_mc_file", str(corpus), "--output_path", str(tmp_path / "out")],
      cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "hellaswag_local" in proc.stdout and "hnet_corpus_mc_uppercase" in proc.stdout
  [result_file] = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "out") for f in fs if f.startswith("results")]
  with open(result_file, encoding="utf-8") as f:
    results = json.load(f)["results"]
  assert 0.0 <= results["hnet_corpus_mc_uppercase"]["acc,none"] <= 1.0
