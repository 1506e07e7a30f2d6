"""kill -9 at random points, async saves included: every resumed run ends with an uninterrupted run's losses.

`train.py --config configs/hnet_1stage.py:tiny` runs as a subprocess (one CPU device, async checkpoints every
2 steps). The kill points are drawn from a seeded generator: a step to wait for, then a delay; one kill waits for
an async save in flight (orbax's `<step>.orbax-checkpoint-tmp-*` directory) and fires while it is there.
After the last kill the run goes to its end; every step's loss (the last line written for it) and the final
evaluation must equal those of a run never interrupted, bit for bit. The same work dir then refuses a
resume with another model in one line, leaving the run as it was.
"""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 20
KILLS_AT_STEPS = 4  # kills after a random step (and a random delay); one more kill during an async save
SEED = 25


def _cmd(workdir, data_dir, *extra):
  return [sys.executable, os.path.join(ROOT, "train.py"), "--config", os.path.join(ROOT, "configs/hnet_1stage.py:tiny"),
          f"--workdir={workdir}", f"--config.data.data_dir={data_dir}", "--progress=false",
          f"--config.train.num_steps={STEPS}", "--config.train.log_every=1", "--config.train.eval_every=1000",
          "--config.train.eval_batches=1", "--config.ckpt.every=2", "--config.ckpt.async_save=true",
          "--config.model.remat=none", *extra]  # remat: traces faster, same numbers


def _env():
  env = dict(os.environ)
  env["XLA_FLAGS"] = xla_flags(1)
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = ROOT
  return env


def _rows(workdir) -> list[dict]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  rows = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:  # a line cut by the kill (and the next process's line glued to it) is no row
        rows.append(json.loads(line))
      except ValueError:
        pass
  return rows


def _last_per_step(rows: list[dict], key: str) -> dict[int, float]:
  return {r["step"]: r[key] for r in rows if key in r}


def _saving(workdir) -> bool:
  ckpts = os.path.join(workdir, "checkpoints")
  return os.path.isdir(ckpts) and any(".orbax-checkpoint-tmp" in n for n in os.listdir(ckpts))


def _kill_when(proc, log_path, ready, delay: float = 0.0, timeout: float = 180.0) -> None:
  """SIGKILL `proc` `delay` seconds after `ready()` first holds (polled every 2 ms); fails if it ends first."""
  deadline = time.time() + timeout
  while not ready():
    assert proc.poll() is None, f"train.py ended before its kill point: {open(log_path).read()[-2000:]}"
    assert time.time() < deadline, "kill point not reached in time"
    time.sleep(0.002)
  time.sleep(delay)
  assert proc.poll() is None, f"train.py ended before its kill point: {open(log_path).read()[-2000:]}"
  proc.send_signal(signal.SIGKILL)
  proc.wait()


def _tree_digest(workdir) -> dict[str, str]:
  out = {}
  for root, _, names in os.walk(workdir):
    for n in names:
      path = os.path.join(root, n)
      with open(path, "rb") as f:
        out[os.path.relpath(path, workdir)] = hashlib.sha256(f.read()).hexdigest()
  return out


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """The embedded corpus prepared once, so that two train.py may start on it at once."""
  from hnet.data import pipeline  # pylint: disable=import-outside-toplevel
  from tests.helpers import load_config  # pylint: disable=import-outside-toplevel
  c = load_config("hnet_1stage")
  c.data.data_dir = str(tmp_path_factory.mktemp("tfds"))
  pipeline.prepare(c.data)
  return c.data.data_dir


def test_kill_9_at_random_points_then_resume_gives_the_uninterrupted_losses(tmp_path, data_dir):
  with open(tmp_path / "straight.log", "wb") as log:  # the reference runs beside the killed runs (2 cores)
    straight = subprocess.Popen(_cmd(tmp_path / "straight", data_dir), env=_env(), stdout=log,
                                stderr=subprocess.STDOUT)

  workdir = tmp_path / "killed"
  rng = np.random.default_rng(SEED)
  kill_steps = sorted(rng.choice(np.arange(3, STEPS - 6), KILLS_AT_STEPS, replace=False).tolist())
  plan = [("save", 4)] + [("step", int(s)) for s in kill_steps]  # (kind, first step it may happen at)
  kills, during_save, i = 0, 0, 0
  while plan:
    kind, at = plan.pop(0)
    i += 1
    seen = len(_rows(workdir))
    log_path = tmp_path / f"run{i}.log"
    with open(log_path, "wb") as log:
      proc = subprocess.Popen(_cmd(workdir, data_dir), env=_env(), stdout=log, stderr=subprocess.STDOUT)
    reached = lambda: max((r["step"] for r in _rows(workdir)[seen:] if "train/loss" in r), default=0) >= at  # noqa: E731,B023
    if kind == "save":
      _kill_when(proc, log_path, lambda: reached() and _saving(workdir))
      during_save += _saving(workdir)  # the unfinished save is still there: the kill hit it
      if not during_save and kills < 3:  # the save finished between the look and the kill: again, later
        plan.insert(0, ("save", at + 2))
    else:
      _kill_when(proc, log_path, reached, delay=float(rng.uniform(0.0, 0.2)))
    kills += 1
  assert kills >= 5 and during_save >= 1, (kills, during_save)
  print(f"{kills} kills (kill -9), {during_save} during an async save, {kills + 1} starts of the killed run")

  final = subprocess.run(_cmd(workdir, data_dir), env=_env(), capture_output=True, timeout=300)
  assert final.returncode == 0, final.stderr.decode()[-3000:]
  assert straight.wait(timeout=300) == 0, open(tmp_path / "straight.log").read()[-3000:]
  want, got = _rows(tmp_path / "straight"), _rows(workdir)
  want_loss, got_loss = _last_per_step(want, "train/loss"), _last_per_step(got, "train/loss")
  assert sorted(got_loss) == sorted(want_loss) == list(range(1, STEPS + 1))
  assert got_loss == want_loss  # bit-identical
  assert _last_per_step(got, "eval/bits_per_byte") == _last_per_step(want, "eval/bits_per_byte")
  assert not _saving(workdir) and not os.path.exists(workdir / "train.lock")

  # Another model in this work dir: one line naming the key, and the run stays as it was.
  before = _tree_digest(workdir)
  other = subprocess.run(_cmd(workdir, data_dir, "--config.model.d_model=(48, 64)"), env=_env(), capture_output=True,
                         timeout=300)
  err = other.stderr.decode().strip()
  assert other.returncode == 1 and len(err.splitlines()) == 1, err[-3000:]
  assert "holds another run: model.d_model=(48, 64) (the run's: (32, 48))" in err and "--init_from" in err, err
  assert _tree_digest(workdir) == before
