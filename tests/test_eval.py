"""eval.py on a tiny trained fixture: loading (any mesh, clear errors), bpb, noise, mc, generate, boundaries.

One tiny hnet_1stage run (2 steps, 8 fake devices) is shared by the module. Every scoring
call uses batches of 8 rows of 64 bytes, so the forward pass compiles once.
"""
# pylint: disable=invalid-name
import copy
import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hnet import BOS_ID, EOS_ID, sharding
from hnet.config import model_config_from_dict
from hnet.data import bytes as doc_bytes
from hnet.evals import boundaries, commands, bpb, documents, mc, packing, perturbations, robustness, sampling, scoring
from hnet.model.loss import LN2, ControllerState
from hnet.train import runs, trainer
from hnet.train.checkpoint import Checkpointer
from hnet.train.optim import make_optimizer
from tests.conftest import xla_flags
from tests.helpers import forward, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXTS = [  # lengths chosen so that every piece of 64 + 1 tokens is longer than half a row (one per row)
    "The quick brown fox jumps over the lazy dog again.",  # 50 bytes: one piece
    "Ünïcödé bytes: 日本語のテキスト and some ASCII words to pad it out, more words here too.",
    "x" * 170,  # three pieces: 65, 65, 44 tokens
]


@pytest.fixture(scope="module")
def run(tiny_hnet_run):
  """(workdir, data_dir) of the shared 2-step tiny hnet_1stage run on 8 devices (conftest)."""
  return tiny_hnet_run


@pytest.fixture(scope="module")
def loaded(run):
  """The fixture restored onto all 8 devices, with noise / mc sizes that fit 64-byte rows."""
  out = runs.load(run[0])
  c = copy.deepcopy(out.config)
  c.eval.continuation_bytes = 16
  c.eval.num_items = 6
  c.eval.mc_choices = 3
  return dataclasses.replace(out, config=c)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("text") / "docs.jsonl"
  path.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS), encoding="utf-8")
  return str(path)


def _direct_nll(loaded, rows_KR: np.ndarray, seg_KR: np.ndarray, mask_KL: np.ndarray) -> np.ndarray:
  """Per-row NLL (nats) from model(...) on a batch of 8 rows, without the eval code path."""
  K, R = rows_KR.shape
  tokens = np.zeros((8, 65), np.int32)  # the shape every test uses: one compile
  seg = np.zeros_like(tokens)
  tokens[:K, :R], seg[:K, :R] = rows_KR, seg_KR
  logits, _ = forward(loaded.model, jnp.asarray(tokens[:, :-1]), jnp.asarray(seg[:, :-1]))
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(tokens[:, 1:]))
  return np.asarray(nll)[:K, :R - 1] * mask_KL


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------
def test_load_by_workdir_checkpoint_path_and_step(run, loaded):
  workdir, _ = run
  assert loaded.step == 2 and loaded.mesh.size == 8
  by_path = runs.load(checkpoint=os.path.join(workdir, "checkpoints", "2"))
  assert by_path.step == 2 and by_path.workdir == os.path.abspath(workdir)
  assert runs.load(checkpoint=os.path.join(workdir, "checkpoints")).step == 2
  for a, b in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(by_path.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_checkpoint_from_eight_devices_restores_on_one(run, loaded):
  one = runs.load(run[0], devices=jax.devices()[:1])
  assert one.mesh.size == 1 and one.batch_size(3) == 3
  leaves = jax.tree.leaves(one.params)
  assert all(len(x.sharding.device_set) == 1 for x in leaves)
  for a, b in zip(jax.tree.leaves(loaded.params), leaves):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_fsdp_and_tensor_sharded_checkpoint_restores_on_one_device(run, loaded, tmp_path):
  """A pod-style checkpoint (parameters split over fsdp x tensor) saved as the trainer saves it."""
  mesh = sharding.make_mesh(2, 2, 2)
  params = jax.device_put(loaded.params, sharding.param_shardings(loaded.params, mesh))
  assert any(not x.sharding.is_fully_replicated for x in jax.tree.leaves(params))
  c = loaded.config
  tx, _ = make_optimizer(c.opt, params, num_steps=c.train.num_steps, model_cfg=loaded.model_cfg)
  state = trainer.TrainState(jnp.int32(5), params, tx.init(params), ControllerState.init())
  ckpt = Checkpointer(str(tmp_path / "pod" / "checkpoints"), async_save=False)
  ckpt.save(5, state, config=json.loads(c.to_json_best_effort()))
  ckpt.close()
  one = runs.load(str(tmp_path / "pod"), devices=jax.devices()[:1])
  assert one.step == 5 and one.mesh.size == 1
  for a, b in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(one.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_clear_errors(run, tmp_path):
  workdir, _ = run
  with pytest.raises(FileNotFoundError, match="workdir .* does not exist"):
    runs.load(str(tmp_path / "nope"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="no checkpoint under .*train first"):
    runs.load(str(tmp_path / "empty"))
  with pytest.raises(FileNotFoundError, match=r"no checkpoint for step 7 .*steps: \[2\]"):
    runs.load(workdir, step=7)
  with pytest.raises(FileNotFoundError, match="checkpoint .* does not exist"):
    runs.load(checkpoint=os.path.join(workdir, "checkpoints", "9"))
  with pytest.raises(ValueError, match="does not match the model built from its config: parameter .* shape"):
    runs.load(workdir, overrides={"model.d_model": (48, 64)})
  with pytest.raises(ValueError, match="no such key"):
    runs.load(workdir, overrides={"eval.no_such_key": 1})
  with pytest.raises(ValueError, match="unknown command"):
    commands.main("perplexity", workdir=workdir)


# ---------------------------------------------------------------------------------------------
# Bits per byte
# ---------------------------------------------------------------------------------------------
def test_bpb_on_a_text_file_is_exact(loaded, text_file):
  out = bpb.evaluate(loaded, text_file=text_file)
  data = [t.encode() for t in TEXTS]
  assert out["exact"] and out["target_bytes"] == sum(len(d) + 1 for d in data)  # every byte and EOS once
  # Direct: every piece on its own row through model(...).
  pieces = [p for d in data for p in doc_bytes.pieces(doc_bytes.encode(d), 64)]
  assert len(pieces) <= 8
  rows_KR = np.zeros((len(pieces), 65), np.int32)
  seg_KR = np.zeros_like(rows_KR)
  for k, p in enumerate(pieces):
    rows_KR[k, :len(p)], seg_KR[k, :len(p)] = p, 1
  mask_KL = ((seg_KR[:, 1:] == 1) & (seg_KR[:, :-1] == 1)).astype(np.float32)
  direct = _direct_nll(loaded, rows_KR, seg_KR, mask_KL).sum()
  assert out["bits_per_byte"] == pytest.approx(direct / mask_KL.sum() / LN2, rel=1e-5)
  (st,) = out["stages"]
  assert 1.0 <= st["bytes_per_chunk"] and st["bytes_per_chunk"] == pytest.approx(1 / st["boundary_frac"])
  assert "soft" not in out  # only the delete gate has a soft mode


def test_bpb_of_the_delete_gate_is_reported_hard_and_soft(run, text_file):
  c = load_config("mrt5")
  c.data.data_dir = run[1]
  c.eval.batch_size = 8
  model_cfg = model_config_from_dict(c.model)
  mesh = sharding.make_mesh()
  graphdef, params, params_sharding = trainer.make_model(model_cfg, mesh, seed=0)
  fresh = runs.Loaded(c, model_cfg, graphdef, params, params_sharding, mesh, 0, run[0], run[0])
  out = bpb.evaluate(fresh, text_file=text_file)
  assert out["soft"]["target_bytes"] == out["target_bytes"]
  assert np.isfinite(out["bits_per_byte"]) and np.isfinite(out["soft"]["bits_per_byte"])
  assert out["soft"]["bits_per_byte"] != out["bits_per_byte"]  # soft deletion biases every key
  assert [r["metric"] for r in bpb.rows(out)][:2] == ["bits/byte (hard deletion)",
                                                      "bits/byte (soft deletion, train=True)"]


def test_bpb_on_any_dataset_the_data_layer_accepts(run, tmp_path):
  """--config.data.* overrides: a text dataset's whole validation split, every target once."""
  docs = [f"document {i}: " + "lorem ipsum dolor " * (4 * (i % 5) + 4) for i in range(24)]
  path = tmp_path / "corpus.jsonl"
  path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
  other = runs.load(run[0], overrides={"data.dataset": "text", "data.text_paths": str(path),
                                          "data.validation_fraction": 0.3, "data.data_dir": str(tmp_path / "tfds"),
                                          "eval.batch_size": 8})
  out = bpb.evaluate(other)
  from hnet.data import sources  # pylint: disable=import-outside-toplevel
  held = sources.holdout([sources.doc_hash(d.encode()) for d in docs], 0.3)
  assert out["exact"] and out["target_bytes"] == sum(len(docs[i].encode()) + 1 for i in held)
  partial = bpb.evaluate(other, max_batches=1)
  assert not partial["exact"] and partial["target_bytes"] < out["target_bytes"]


def test_packing_keeps_segments_apart():
  segs = [(np.arange(2, 2 + n, dtype=np.uint8), np.ones(n - 1, np.float32)) for n in (10, 30, 40, 65, 2)]
  packed = packing.pack(segs, 64)
  assert packed.where == [(0, 1), (0, 2), (1, 1), (2, 1), (3, 1)]
  values_KL = np.ones(packed.target_mask_KL.shape) * packed.target_mask_KL
  np.testing.assert_array_equal(packing.segment_sums(packed, values_KL), [9, 29, 39, 64, 1])
  assert packing.left_truncate("aé".encode(), 1) == b"" and packing.left_truncate("aé".encode(), 2) == "é".encode()
  assert packing.right_truncate("éa".encode(), 1) == b"" and packing.right_truncate("éa".encode(), 2) == "é".encode()


# ---------------------------------------------------------------------------------------------
# Noise robustness and multiple choice
# ---------------------------------------------------------------------------------------------
def test_noise_scores_the_clean_continuation_after_each_perturbation(loaded):
  texts = [t.decode() for t in documents.load(loaded.config.data, limit=40)]
  pairs = robustness.make_pairs(texts, loaded.config)
  assert len(pairs) == 6 and all(len(cont.encode()) <= 16 for _, cont in pairs)
  out = robustness.evaluate(loaded, pairs)
  names = [t["perturbation"] for t in out["tasks"]]
  assert names == list(perturbations.PERTURBATIONS)
  cont_bytes = sum(len(cont.encode()) for _, cont in pairs)
  assert out["clean"]["target_bytes"] == cont_bytes  # only continuation bytes count...
  for t in out["tasks"]:
    assert t["target_bytes"] == cont_bytes  # ...the same ones for every perturbation
    assert t["degradation"] == pytest.approx(t["bits_per_byte"] - out["clean"]["bits_per_byte"])
    assert np.isfinite(t["bits_per_byte"])
  # The context is cut before noising: AntSpeak (a space after every character) keeps the clean context whole.
  ant = next(t for t in out["tasks"] if t["perturbation"] == "antspeak")
  assert ant["context_bytes"] > 1.5 * out["clean"]["context_bytes"]
  assert ant["context_bytes"] <= 64 - 1 - 1  # BOS, at least one continuation byte


def test_noise_contexts_are_cut_before_noising_so_every_task_sees_the_same_text():
  text = "Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing to do."
  names = list(perturbations.PERTURBATIONS)
  assert robustness.common_context(text, names, 3, 1000) == text  # room for every form: nothing cut
  for budget in (150, 80, 21):
    ctx = robustness.common_context(text, names, 3, budget)
    assert ctx and text.endswith(ctx) and text[len(text) - len(ctx) - 1] == " "  # a suffix, at a word
    assert all(len(perturbations.perturb(p, ctx, 3).encode()) <= budget for p in names)
    assert len(ctx.encode()) * 2 - 1 <= budget  # AntSpeak's doubling is what bounds it


def test_mc_loglik_matches_the_model_and_scores_items(loaded):
  fn = mc.loglik_fn(loaded)
  ctx, cont = "The cat sat on the ".encode(), "mat.".encode()
  ll = fn([ctx, b"x" * 100, b""], [cont, "é".encode(), b""])
  tokens = np.frombuffer(bytes([BOS_ID]) + ctx + cont, np.uint8)[None]
  mask = np.zeros((1, tokens.shape[1] - 1), np.float32)
  mask[0, len(ctx):] = 1
  direct = _direct_nll(loaded, tokens, np.ones_like(tokens), mask).sum()
  assert ll[0] == pytest.approx(-direct, rel=1e-5)
  assert ll[1] < 0 and ll[2] == 0.0  # long contexts are cut to fit; empty pairs score nothing
  texts = [t.decode() for t in documents.load(loaded.config.data, limit=40)]
  items = mc.document_items(texts, loaded.config)
  out = mc.evaluate(loaded, items, perturbations=("uppercase", "drop"))
  assert out["num_items"] == 6 and out["num_choices"] == 3
  assert [t["perturbation"] for t in out["tasks"]] == ["uppercase", "drop"]
  assert 0.0 <= out["clean"]["acc_bytes"] <= 1.0 and out["clean"]["acc_stderr"] >= 0


def test_mc_reads_a_released_hellaswag_jsonl_whole(loaded):
  path = os.path.join(ROOT, "tests", "fixtures", "hellaswag_tiny.jsonl")
  result, rows, _ = commands.run("mc", loaded, commands.Options(hellaswag_file=path))
  assert result["num_items"] == 8 and result["num_choices"] == 4 and result["source"] == path  # every item
  assert rows[0]["task"] == "clean" and len(result["tasks"]) == len(loaded.config.eval.perturbations)
  assert " ± " in rows[0]["acc_norm"] and rows[-1]["task"] == "noised mean"
  limited, _, _ = commands.run("mc", loaded, commands.Options(hellaswag_file=path, limit=3))
  assert limited["num_items"] == 3
  with pytest.raises(FileNotFoundError, match="does not exist"):
    commands.run("mc", loaded, commands.Options(hellaswag_file=path + ".missing"))


def test_robustness_table_has_a_row_per_model_and_a_chart(run, tmp_path):
  path = os.path.join(ROOT, "tests", "fixtures", "hellaswag_tiny.jsonl")
  printed = []
  opts = commands.Options(workdirs=[run[0], run[0]], hellaswag_file=path, out=str(tmp_path / "r.json"))
  result = commands.main("robustness", opts=opts, echo=printed.append)
  assert [m["workdir"] for m in result["models"]] == [run[0], run[0]] and result["num_items"] == 8
  assert list(result["models"][0]["scores"]) == ["clean", *perturbations.PAPER_PERTURBATIONS]
  assert result["models"][0]["scores"] == result["models"][1]["scores"]  # same model, same items, same noise
  table = printed[1].splitlines()
  assert table[0].startswith("| model | clean | antspeak |") and len(table) == 4
  assert (tmp_path / "r.png").stat().st_size > 0 and json.loads((tmp_path / "r.json").read_text())["metric"] == "acc_norm"
  with pytest.raises(ValueError, match="--metric"):
    commands.main("robustness", opts=commands.Options(workdirs=[run[0]], hellaswag_file=path, metric="f1"))


# ---------------------------------------------------------------------------------------------
# Generation and boundaries
# ---------------------------------------------------------------------------------------------
def test_generate_is_batched_seeded_and_safe_to_print(loaded, tmp_path):
  prompt_file = tmp_path / "prompts.txt"
  prompt_file.write_bytes("Über\n\n".encode() + b"ab\xff\n")
  prompts = sampling.read_prompts(["The "], str(prompt_file))
  assert prompts == [b"The ", "Über".encode(), b"ab\xff"]
  kwargs = {"max_bytes": 12, "temperature": 1.0, "top_k": 20, "top_p": 0.9, "seed": 3}
  out = sampling.run(loaded, prompts, **kwargs)
  again = sampling.run(loaded, prompts, **kwargs)
  assert out["samples"] == again["samples"]
  assert [s["prompt"] for s in out["samples"]] == ["The ", "Über", "ab\\xff"]
  for s in out["samples"]:
    assert s["output_bytes"] <= 12 and chr(EOS_ID) not in s["output"]
    s["output"].encode("utf-8")  # printable: invalid bytes are escapes, never surrogates
  assert sampling.show(b"a\xffb\xc3") == "a\\xffb\\xc3"
  assert sampling.show("é\x1b[2J\n\t".encode()) == "é\\x1b[2J\n\t"  # no terminal escapes get through
  with pytest.raises(ValueError, match="--prompt"):
    sampling.read_prompts([], None)


def test_boundaries_write_a_report_that_matches_the_model(loaded, tmp_path):
  text = "Hello, wörld! Chunks appear here."
  result, rows, terminal = commands.run("boundaries", loaded, commands.Options(text=text, out=str(tmp_path)))
  for name in ("boundaries.html", "boundaries.txt", "boundary_probs.png"):
    assert (tmp_path / name).stat().st_size > 0
  assert "<html>" in (tmp_path / "boundaries.html").read_text(encoding="utf-8")
  assert "wörld" in terminal and rows[0]["stage"] == 0
  (st,) = result["stages"]
  n = len(text.encode()) + 1  # BOS first
  assert st["elements"] == n and st["boundaries"][0] == 0 and len(st["probs"]) == n
  # The same row through the model: its boundary fraction counts the same boundaries.
  data, _, _ = boundaries.extract(loaded, text.encode())
  batch = packing.pack([(np.frombuffer(data, np.uint8), np.ones(n - 1, np.float32))], 64)
  _, metrics = scoring.Scorer(loaded)(next(packing.batches(batch, 8)))
  assert metrics["stage0/boundary_frac"] * n == pytest.approx(st["chunks"], abs=1e-3)


def test_main_prints_a_table_and_writes_json(run, text_file):
  lines = []
  result = commands.main("bpb", workdir=run[0], opts=commands.Options(text_file=text_file),
                           echo=lines.append)
  path = os.path.join(run[0], "eval", "bpb_step2_text-docs.json")  # named by what was evaluated
  with open(path, encoding="utf-8") as f:
    saved = json.load(f)
  assert saved["bits_per_byte"] == pytest.approx(result["bits_per_byte"]) and saved["step"] == 2
  table = next(line for line in lines if line.startswith("| metric"))
  assert "| bits/byte |" in table and lines[-1] == f"wrote {path}"


def test_cli_restores_the_eight_device_checkpoint_on_one_device(run, text_file, tmp_path):
  env = {**os.environ, "XLA_FLAGS": xla_flags(1), "JAX_PLATFORMS": "cpu",
         "PYTHONPATH": ROOT}
  out = tmp_path / "bpb.json"
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "eval.py"), f"--workdir={run[0]}", "bpb",
                         f"--text_file={text_file}", f"--out={out}", "--config.eval.batch_size=8"],
                        env=env, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "| bits/byte |" in proc.stdout and "onto 1 device" in proc.stderr
  direct = bpb.evaluate(runs.load(run[0]), text_file=text_file)  # the same numbers on 8 devices
  assert json.loads(out.read_text())["bits_per_byte"] == pytest.approx(direct["bits_per_byte"], rel=1e-5)
  bad = subprocess.run([sys.executable, os.path.join(ROOT, "eval.py"), f"--workdir={tmp_path / 'none'}"],
                       env=env, capture_output=True, text=True, timeout=300, check=False)
  assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].startswith("eval.py: error: workdir")
