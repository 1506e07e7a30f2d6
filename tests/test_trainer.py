"""Training loop: exact resume, preemption, mesh changes, NaN stop, multi-host agreement, work-dir ownership,
resume past a corrupt step, --init_from."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from hnet.train import trainer
from tests.conftest import xla_flags
from tests.helpers import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def _config(data_dir, family="hnet_1stage", steps=4):
  c = load_config(family)
  c.data.data_dir = data_dir
  c.train.num_steps = steps
  c.train.batch_size = 8  # divisible by the 8 test devices
  c.train.log_every = 1
  c.train.eval_every = steps
  c.train.eval_batches = 1
  c.train.full_final_eval = False
  c.ckpt.every = 100
  c.ckpt.async_save = False
  return c


def _losses(workdir):
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8")]
  return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def test_resume_reproduces_the_uninterrupted_run(tmp_path, data_dir):
  c = _config(data_dir, steps=4)
  straight = trainer.train_and_evaluate(c, str(tmp_path / "straight"), progress=False)
  first = trainer.train_and_evaluate(c, str(tmp_path / "resumed"), progress=False, stop_after=2)
  assert first["step"] == 2 and first["stopped"] == "stop_after=2"
  second = trainer.train_and_evaluate(c, str(tmp_path / "resumed"), progress=False)
  assert second["step"] == 4
  a, b = _losses(tmp_path / "straight"), _losses(tmp_path / "resumed")
  assert sorted(a) == sorted(b) == [1, 2, 3, 4]
  for step in a:
    assert abs(a[step] - b[step]) <= 1e-6, f"step {step}: {a[step]} vs {b[step]}"
  assert straight["eval"]["bits_per_byte"] == pytest.approx(second["eval"]["bits_per_byte"], abs=1e-6)


def test_restore_onto_a_different_mesh(tmp_path, data_dir):
  c = _config(data_dir, "flat", steps=3)
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 2, 2, 2
  trainer.train_and_evaluate(c, str(tmp_path / "run"), progress=False, stop_after=2)
  c2 = _config(data_dir, "flat", steps=3)
  c2.mesh.data, c2.mesh.fsdp, c2.mesh.tensor = 1, 8, 1
  out = trainer.train_and_evaluate(c2, str(tmp_path / "run"), progress=False)
  assert out["step"] == 3 and np.isfinite(out["train"]["loss"])
  ref = trainer.train_and_evaluate(c, str(tmp_path / "ref"), progress=False)
  assert out["train"]["loss"] == pytest.approx(ref["train"]["loss"], abs=1e-4)


def test_non_finite_loss_stops_with_a_clear_message(tmp_path, data_dir):
  c = _config(data_dir, "flat", steps=4)  # the check is the loop's, whatever the model
  c.opt.lr = 1e30
  c.opt.grad_clip = 0.0
  c.opt.warmup_steps = 0
  with pytest.raises(FloatingPointError, match="non-finite loss .* last good checkpoint"):
    trainer.train_and_evaluate(c, str(tmp_path / "nan"), progress=False)


def test_invalid_batch_and_mesh_give_clear_errors(tmp_path, data_dir):
  c = _config(data_dir)
  c.train.batch_size = 6
  c.mesh.data = 8
  with pytest.raises(ValueError, match="data-parallel size"):
    trainer.train_and_evaluate(c, str(tmp_path / "bad"), progress=False)
  c = _config(data_dir)
  c.mesh.data, c.mesh.fsdp = 3, -1
  with pytest.raises(ValueError, match="mesh"):
    trainer.train_and_evaluate(c, str(tmp_path / "bad2"), progress=False)


def _train_cmd(workdir, data_dir, *extra):
  """train.py on the flat model: the subprocess tests check the loop (signals, processes), not a model."""
  return [sys.executable, os.path.join(ROOT, "train.py"), "--config", os.path.join(ROOT, "configs/flat.py:tiny"),
          f"--workdir={workdir}", f"--config.data.data_dir={data_dir}", "--progress=false", *extra]


def _env(devices: int):
  env = dict(os.environ)
  env["XLA_FLAGS"] = xla_flags(devices)
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = ROOT
  return env


def test_sigterm_saves_a_restorable_checkpoint(tmp_path, data_dir):
  workdir = tmp_path / "preempt"
  proc = subprocess.Popen(_train_cmd(workdir, data_dir, "--config.train.num_steps=100000",
                                     "--config.train.log_every=1", "--config.ckpt.every=100000"),
                          env=_env(1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + 240
  while time.time() < deadline and not (metrics.exists() and metrics.stat().st_size > 0):
    assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
    time.sleep(0.5)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=240)
  assert proc.returncode == 0, out.decode()[-3000:]
  steps = [int(p) for p in os.listdir(workdir / "checkpoints") if p.isdigit()]
  assert steps, "no checkpoint written on SIGTERM"
  # Resuming continues from the saved step.
  c = _config(data_dir, "flat", steps=max(steps) + 1)
  out = trainer.train_and_evaluate(c, str(workdir), progress=False)
  assert out["step"] == max(steps) + 1


def test_two_processes_agree_with_one(tmp_path, data_dir):
  """2 processes x 4 CPU devices (jax.distributed, gloo) == 1 process x 8 devices, step by step.

  The flat model: what differs between one process and two (distributed init, per-process data
  shards, global arrays) is model-agnostic, and sharded hierarchies are checked in test_model.py.
  """
  common = ["--config.train.num_steps=3", "--config.train.log_every=1", "--config.train.batch_size=8",
            "--config.data.shards=2", "--config.ckpt.async_save=false"]
  single = subprocess.run(_train_cmd(tmp_path / "one", data_dir, *common), env=_env(8), capture_output=True,
                          timeout=300)
  assert single.returncode == 0, single.stderr.decode()[-3000:]
  import portpicker  # pylint: disable=import-outside-toplevel
  port = portpicker.pick_unused_port()
  procs = [subprocess.Popen(_train_cmd(tmp_path / "two", data_dir, *common, "--distributed=explicit",
                                       f"--coordinator=localhost:{port}", "--num_processes=2", f"--process_id={i}"),
                            env=_env(4), stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]
  for p in procs:
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out.decode()[-3000:]
  a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
  assert sorted(a) == sorted(b) == [1, 2, 3]
  for step in a:
    assert abs(a[step] - b[step]) <= 1e-5, f"step {step}: {a[step]} vs {b[step]}"


def _digest(workdir) -> dict[str, str]:
  out = {}
  for root, _, names in os.walk(workdir):
    for n in names:
      with open(os.path.join(root, n), "rb") as f:
        out[os.path.relpath(os.path.join(root, n), workdir)] = hashlib.sha256(f.read()).hexdigest()
  return out


def test_a_resume_with_another_model_is_refused_and_the_run_stays_intact(tmp_path, data_dir):
  workdir = str(tmp_path / "run")
  trainer.train_and_evaluate(_config(data_dir, steps=2), workdir, progress=False)
  before = _digest(workdir)
  other = _config(data_dir, steps=4)
  other.model.d_model = (48, 64)
  other.seed = 1
  with pytest.raises(ValueError, match=rf"^work dir {workdir} holds another run: model.d_model=\(48, 64\) \(the run's: "
                                       rf"\(32, 48\)\), seed=1 \(the run's: 0\); train in a new --workdir, or start from "
                                       rf"this run's weights with --init_from={workdir} --workdir=<new dir>"):
    trainer.train_and_evaluate(other, workdir, progress=False)
  assert _digest(workdir) == before


def test_resume_past_a_corrupt_step_runs_to_the_end(tmp_path, data_dir):
  workdir = tmp_path / "run"
  c = _config(data_dir, steps=4)
  c.ckpt.every = 2
  trainer.train_and_evaluate(c, str(workdir), progress=False)
  state_dir = workdir / "checkpoints" / "4" / "state"
  largest = max((p for p in state_dir.rglob("*") if p.is_file() and p.parent.name == "d"), key=lambda p: p.stat().st_size)
  with open(largest, "r+b") as f:
    f.truncate(largest.stat().st_size // 2)
  c.train.num_steps = 6
  out = trainer.train_and_evaluate(c, str(workdir), progress=False)  # resumes at 2, saves 4 again, ends at 6
  assert out["step"] == 6 and np.isfinite(out["train"]["loss"])
  names = os.listdir(workdir / "checkpoints")
  assert {"4", "6"} <= set(names) and len([n for n in names if n.startswith("4.corrupt-")]) == 1, names


def test_init_from_starts_a_new_run_from_another_runs_weights(tmp_path, data_dir):
  from hnet.train import runs  # pylint: disable=import-outside-toplevel
  source = str(tmp_path / "source")
  trainer.train_and_evaluate(_config(data_dir, steps=2), source, progress=False)
  c = _config(data_dir, steps=1)
  c.model.capacity_slack = 2.0  # another model of the same parameters: refused as a resume, fine as a start
  c.seed = 3  # another initialisation: only --init_from gives the source's weights
  c.opt.lr = 1e-30  # one step that changes (next to) nothing: the new run's weights are the source's
  out = trainer.train_and_evaluate(c, str(tmp_path / "tuned"), progress=False, init_from=source)
  assert out["step"] == 1
  a, b = runs.load(source).params, runs.load(str(tmp_path / "tuned")).params
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-20)
  c.model.d_model = (48, 64)
  with pytest.raises(ValueError, match=r"^checkpoint step 2 under .*source/checkpoints does not match the model of "
                                       r"this config \(--init_from\): parameter .* has shape"):
    trainer.train_and_evaluate(c, str(tmp_path / "wider"), progress=False, init_from=source)


def test_optimizer_moments_are_sharded_like_their_parameters():
  """Under FSDP, AdamW's mu and nu take their parameter's sharding (not a full copy per device)."""
  from hnet import sharding  # pylint: disable=import-outside-toplevel
  from hnet.config import model_config_from_dict  # pylint: disable=import-outside-toplevel
  from hnet.train import optim  # pylint: disable=import-outside-toplevel
  c = load_config("hnet_1stage", "tiny")
  c.mesh.data, c.mesh.fsdp = 1, 8
  model_cfg = model_config_from_dict(c.model)
  mesh = sharding.mesh_of_config(c.mesh)
  _, params, _ = trainer.make_model(model_cfg, mesh, 0)
  tx, _ = optim.make_optimizer(c.opt, params, num_steps=4, model_cfg=model_cfg)
  state, _ = trainer.init_train_state(params, tx, mesh)
  mu, nu = state.opt_state[1].mu, state.opt_state[1].nu  # (clip_by_global_norm, scale_by_adam, ...)
  sharded = 0
  for p, m, v in zip(jax.tree.leaves(params), jax.tree.leaves(mu), jax.tree.leaves(nu)):
    assert m.shape == p.shape and m.sharding.is_equivalent_to(p.sharding, p.ndim)
    assert v.sharding.is_equivalent_to(p.sharding, p.ndim)
    sharded += not p.sharding.is_fully_replicated
  assert sharded > 0
