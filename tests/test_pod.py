"""Pod-scale operations on 8 fake CPU devices: several slices in one mesh, profile traces, goodput."""
import glob
import json
import os
import time

import numpy as np
import pytest

from hnet import sharding
from hnet.train import goodput, trainer
from tests.helpers import load_config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def _config(data_dir, steps=4):
  c = load_config("flat")  # the mesh, the loop and the clock are under test, not a router
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


def test_slices_are_consecutive_devices_on_the_outer_part_of_their_axes():
  c = _config("unused")
  c.mesh.data, c.mesh.fsdp, c.mesh.dcn_data = 2, -1, 2
  mesh = sharding.mesh_of_config(c.mesh)
  assert dict(mesh.shape) == {"data": 4, "fsdp": 2, "tensor": 1}
  ids = np.vectorize(lambda d: d.id)(mesh.devices)[:, :, 0]
  np.testing.assert_array_equal(ids, [[0, 1], [2, 3], [4, 5], [6, 7]])  # slice 0: devices 0-3, rows 0-1
  c.mesh.dcn_data, c.mesh.dcn_fsdp, c.mesh.data = 2, 2, 2  # 4 slices of 2 devices, each slice 2 x 1
  ids = np.vectorize(lambda d: d.id)(sharding.mesh_of_config(c.mesh).devices)[:, :, 0]
  np.testing.assert_array_equal(ids, [[0, 2], [1, 3], [4, 6], [5, 7]])  # slice (i, j) at data 2i.., fsdp j
  c.mesh.dcn_fsdp = 1
  c.mesh.dcn_data = 3
  with pytest.raises(ValueError, match="8 devices are not divisible into mesh.dcn_data"):
    sharding.mesh_of_config(c.mesh)
  c.mesh.dcn_data, c.mesh.data = 2, 3
  with pytest.raises(ValueError, match=r"4 devices are not divisible by fsdp\*tensor\*data=3 \(per slice, of 2 slices\)"):
    sharding.mesh_of_config(c.mesh)


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory, data_dir):
  """(workdir, result, seconds outside) of a 4-step run on one mesh of 8, the reference of the tests below."""
  workdir = str(tmp_path_factory.mktemp("plain"))
  t0 = time.perf_counter()
  result = trainer.train_and_evaluate(_config(data_dir), workdir, progress=False)
  return workdir, result, time.perf_counter() - t0


def test_two_slices_train_like_one_mesh(tmp_path, data_dir, plain_run):
  """8 devices as 2 slices of 4 (data over DCN, fsdp inside a slice) give the losses of one mesh of 8."""
  c = _config(data_dir)
  c.mesh.data, c.mesh.fsdp, c.mesh.dcn_data = 1, -1, 2
  trainer.train_and_evaluate(c, str(tmp_path / "two"), progress=False)
  a, b = _losses(plain_run[0]), _losses(tmp_path / "two")
  assert sorted(a) == sorted(b) == [1, 2, 3, 4]
  for step in a:  # another mesh sums in another order: the tolerance of a mesh change (test_trainer.py)
    assert a[step] == pytest.approx(b[step], abs=1e-4), f"step {step}: {a[step]} vs {b[step]}"


def test_goodput_parts_add_up_to_the_wall_time(plain_run):
  workdir, result, outside = plain_run
  g = result["goodput"]
  parts = [f"{p}_s" for p in goodput.PARTS]
  assert all(g[k] >= 0 for k in parts) and g["compile_s"] > 0 and g["step_s"] > 0 and g["eval_s"] > 0
  # Every piece of work is measured: what no part claims (loop bookkeeping) is a few percent of the wall.
  assert 0 <= g["other_s"] <= 0.05 * g["wall_s"], g
  assert sum(g[k] for k in parts) + g["other_s"] == pytest.approx(g["wall_s"], rel=1e-9)
  assert g["wall_s"] == pytest.approx(outside, rel=0.05)  # the clock covers the whole call
  assert g["goodput"] == pytest.approx(g["step_s"] / g["wall_s"])
  line = goodput.summary_line(g)
  assert line.startswith(f"goodput: {100 * g['goodput']:.0f}% of wall time in training steps (setup ")
  rows = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8")]
  window = [r for r in rows if "train/data_wait_frac" in r][-1]
  assert 0 <= window["train/data_wait_frac"] <= 1 and window["train/device_step_s"] > 0
  assert rows[-1]["goodput/wall_s"] == pytest.approx(g["wall_s"])


def test_a_profile_leaves_training_unchanged_and_a_resume_counts_its_restore(tmp_path, data_dir, plain_run):
  c = _config(data_dir)
  c.train.profile_steps = (2, 2)  # steps 2..3 traced; the run stops after step 3 and resumes
  first = trainer.train_and_evaluate(c, str(tmp_path / "profiled"), progress=False, stop_after=3)
  assert first["step"] == 3
  traces = glob.glob(str(tmp_path / "profiled" / "profile" / "**" / "*.xplane.pb"), recursive=True)
  assert traces and os.path.getsize(traces[0]) > 0
  resumed = trainer.train_and_evaluate(c, str(tmp_path / "profiled"), progress=False)
  assert resumed["goodput"]["restore_s"] > 0 and first["goodput"]["checkpoint_s"] > 0
  assert _losses(tmp_path / "profiled") == _losses(plain_run[0])
