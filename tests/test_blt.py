"""BLT entropy patching: the start rule, the frozen entropy LM in training, calibration, errors."""

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hnet.config import model_config_from_dict
from hnet.configs import blt as blt_config
from hnet.configs import entropy_lm as entropy_lm_config
from hnet.evals import boundaries
from hnet.model.routers.entropy import next_byte_entropy, starts_chunk
from hnet.tools import calibrate_entropy
from hnet.train import runs, trainer
from tests.helpers import load_config, packed_batch, tiny_model


def test_start_rule_global_and_monotonic():
  h = jnp.asarray([3.0, 1.0, 2.5, 2.6, 0.5, 4.0])  # H_t for t = 0..5
  prev, prev2 = jnp.pad(h[:-1], (1, 0)), jnp.pad(h[:-2], (2, 0))
  pos = jnp.arange(6)
  # Global, θ = 2: byte t starts a patch iff H[t-1] > 2 (byte 0 never decided here: a document start).
  np.testing.assert_array_equal(starts_chunk(prev, prev2, pos, rule="global", threshold=2.0),
                                [0, 1, 0, 1, 1, 0])
  # Monotonic, θ = 1: byte 1 always; byte t >= 2 iff H[t-1] - H[t-2] > 1.
  np.testing.assert_array_equal(starts_chunk(prev, prev2, pos, rule="monotonic", threshold=1.0),
                                [0, 1, 0, 1, 0, 0])
  uniform = jnp.zeros((1, 256))
  np.testing.assert_allclose(next_byte_entropy(uniform), [np.log(256)], rtol=1e-6)


def test_router_applies_the_rule_to_the_lm_entropies_and_forces_document_starts():
  model = tiny_model("blt", capacity_slack=4.0)  # budgets hold every proposal
  tokens, seg = packed_batch(2, 64, seed=2)
  h = np.asarray(model.backbone.router.entropies(tokens, seg))
  theta = float(np.median(h))  # about half of the bytes start a patch
  model.backbone.router.threshold = theta
  got = np.asarray(boundaries.routing(model, tokens, seg)[0]["boundary_BL"])
  seg_np = np.asarray(seg)
  want = np.zeros_like(got)
  for b in range(2):
    for t in range(64):
      start = t == 0 or seg_np[b, t - 1] != seg_np[b, t]
      want[b, t] = seg_np[b, t] > 0 and (start or h[b, t - 1] > theta)
  np.testing.assert_array_equal(got, want)
  assert 0 < got.sum() < (seg_np > 0).sum()


def test_entropy_lm_is_frozen_and_counted_in_flops():
  c = load_config("blt")
  cfg = model_config_from_dict(c.model)
  from hnet.model.flops import flops_breakdown, flops_per_byte  # pylint: disable=import-outside-toplevel
  lm = flops_per_byte(cfg.entropy_lm, c.data.seq_len)
  assert flops_breakdown(cfg, c.data.seq_len)["stage0/entropy_lm"] == pytest.approx(lm)
  assert flops_breakdown(cfg, c.data.seq_len, train=True)["stage0/entropy_lm"] == pytest.approx(lm / 3)
  model = tiny_model("blt")
  tokens, seg = packed_batch(2, 64, seed=3)

  def loss(params, graphdef):
    logits, _ = nnx.merge(graphdef, params)(tokens, seg)
    return jnp.mean(logits**2)

  graphdef, params = nnx.split(model)
  grads = jax.grad(loss)(params, graphdef)
  lm_grads = jax.tree.leaves(grads["backbone"]["router"]["entropy_lm"])
  assert lm_grads and all(float(jnp.abs(g).max()) == 0 for g in lm_grads)


def test_missing_or_incompatible_entropy_model_is_one_line(tmp_path):
  c = load_config("blt")
  c.model.entropy_model = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="model.entropy_model=.*nowhere"):
    model_config_from_dict(c.model)
  other = tmp_path / "cosine"
  other.mkdir()
  (other / "config.json").write_text(load_config("hnet_1stage").to_json_best_effort())
  c.model.entropy_model = str(other)
  with pytest.raises(ValueError, match="is not a flat byte LM"):
    model_config_from_dict(c.model)


def _run_config(name: str, data_dir: str, steps: int):
  c = load_config(name)
  c.data.data_dir = data_dir
  c.train.num_steps, c.train.batch_size, c.train.eval_every, c.train.eval_batches = steps, 8, steps, 1
  c.ckpt.async_save = False
  return c


@pytest.fixture(scope="module")
def entropy_run(tmp_path_factory):
  """A tiny entropy LM trained for 3 steps, then a tiny BLT model trained on top of it for 2."""
  root = tmp_path_factory.mktemp("blt")
  data_dir = str(root / "tfds")
  trainer.train_and_evaluate(_run_config("entropy_lm", data_dir, 3), str(root / "entropy"), progress=False)
  b = _run_config("blt", data_dir, 2)
  b.model.entropy_model = str(root / "entropy")
  trainer.train_and_evaluate(b, str(root / "blt"), progress=False)
  return root


def test_training_keeps_the_loaded_entropy_lm(entropy_run):
  lm = runs.load(str(entropy_run / "entropy"))
  blt = runs.load(str(entropy_run / "blt"))
  assert blt.step == 2
  got = jax.tree.leaves(blt.params["backbone"]["router"]["entropy_lm"])
  want = jax.tree.leaves(lm.params)
  assert len(got) == len(want)
  for g, w in zip(got, want):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_entropy_checkpoint_missing_is_one_line(entropy_run, tmp_path):
  empty = tmp_path / "config_only"
  empty.mkdir()
  (empty / "config.json").write_text((entropy_run / "entropy" / "config.json").read_text())
  b = _run_config("blt", str(entropy_run / "tfds"), 1)
  b.model.entropy_model = str(empty)
  with pytest.raises(FileNotFoundError, match=f"model.entropy_model='{empty}': no checkpoint"):
    trainer.train_and_evaluate(b, str(tmp_path / "run"), progress=False)


def test_calibration_hits_the_target_ratio_and_writes_the_config(entropy_run, tmp_path):
  b = _run_config("blt", str(entropy_run / "tfds"), 1)
  b.model.entropy_model = str(entropy_run / "entropy")
  out = calibrate_entropy.calibrate(b, batches=2)
  assert out["bytes_per_patch"] == pytest.approx(b.model.target_ratio[0], rel=0.05)
  config = tmp_path / "blt_copy.py"
  config.write_text("c.model.entropy_threshold = 2.0  # nats\n")
  calibrate_entropy.write_threshold(str(config), out["threshold"])
  assert config.read_text() == f"c.model.entropy_threshold = {out['threshold']:.4f}  # nats\n"
  scores = np.asarray([5.0, 4.0, 3.0, 2.0, 1.0])
  assert calibrate_entropy.threshold_for(scores, positions=12, forced=1, target_ratio=4.0) == 3.5  # 1 + 2 of 12


def test_write_refuses_a_threshold_that_is_not_the_config_files_own():
  own, lm_own = blt_config.get_config(), entropy_lm_config.get_config()
  measured = blt_config.get_config()
  measured.model.entropy_model, measured.data.data_dir = "runs/entropy", "/elsewhere"  # free: θ means the same
  lm_stored = json.loads(lm_own.to_json_best_effort())
  full = dict(measured_bytes=64 * 8 * 256, lm_stored=lm_stored, lm_step=lm_own.train.num_steps, lm_own=lm_own)
  assert calibrate_entropy.write_refusal(measured, own, **full) is None
  tiny = blt_config.get_config("tiny")
  assert "differs from the file's own in ckpt.every, data.seq_len" in calibrate_entropy.write_refusal(tiny, own, **full)
  assert "only 2,048 bytes to measure" in calibrate_entropy.write_refusal(measured, own, **{**full, "measured_bytes": 2048})
  assert "at step 4 of configs/entropy_lm.py's 1500" in calibrate_entropy.write_refusal(
      measured, own, **{**full, "lm_step": 4})
  tiny_lm = json.loads(entropy_lm_config.get_config("tiny").to_json_best_effort())
  assert "not configs/entropy_lm.py's model (differs in model.d_ff, model.d_model" in (
      calibrate_entropy.write_refusal(measured, own, **{**full, "lm_stored": tiny_lm}))


def _calibrate_cli(config, entropy_run, *flags_):
  return subprocess.run(
      [sys.executable, "-m", "hnet.tools.calibrate_entropy", f"--config={config}:tiny",
       f"--config.model.entropy_model={entropy_run / 'entropy'}", f"--config.data.data_dir={entropy_run / 'tfds'}",
       "--batches=2", *flags_], capture_output=True, text=True, timeout=300,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_write_from_a_tiny_measurement_is_refused_unless_forced(entropy_run, tmp_path):
  config = tmp_path / "blt.py"  # a copy: a broken refusal must not touch the shipped θ
  shutil.copy(blt_config.__file__, config)
  shipped = config.read_text()
  proc = _calibrate_cli(config, entropy_run, "--write")
  assert proc.returncode == 1, proc.stderr
  assert "Traceback" not in proc.stderr and "θ =" not in proc.stdout, proc.stdout + proc.stderr
  line = proc.stderr.strip().splitlines()[-1]
  assert line.startswith(f"calibrate_entropy: error: refusing --write into {config}: the config differs"), line
  assert "bytes to measure" in line and "the entropy LM is not configs/entropy_lm.py's model" in line, line
  assert line.endswith("or --force_write to write it anyway"), line
  assert config.read_text() == shipped
  proc = _calibrate_cli(config, entropy_run, "--force_write")
  assert proc.returncode == 0, proc.stderr
  theta = proc.stdout.split("θ = ")[1].split()[0]
  assert f"c.model.entropy_threshold = {theta}  # nats" in config.read_text()
  assert config.read_text().replace(theta, "2.6671") == shipped
