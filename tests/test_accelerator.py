"""bench/accelerator.py: the accelerator-hour command end to end at toy sizes on CPU, its watchdog, its parts' maths."""
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from bench import accelerator, train_step
from hnet.configs import flat
from tests.conftest import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tiny_run_writes_every_part_and_the_kernels_match_xla(tmp_path, capsys):
  results = accelerator.main(["--variant", "tiny", "--out_dir", str(tmp_path), "--batch", "8"])  # 8 CPU devices
  with open(results.path, encoding="utf-8") as f:
    data = json.load(f)
  assert os.path.basename(results.path).startswith("accelerator_cpu_") and results.path.endswith("_tiny.json")
  assert list(data["parts"]) == list(accelerator.BUDGETS_S) and "stopped" not in data
  for part in data["parts"].values():
    assert "error" not in part, part
  kernels = data["parts"]["kernels"]
  for kernel, impls in (("ssd", ["pallas_tpu_interpret", "pallas_gpu_interpret"]), ("attention", ["splash"])):
    for dtype in ("float32", "bfloat16"):
      row = kernels[kernel][dtype]
      assert row["tolerance"] == accelerator.TOLERANCE[dtype]
      for impl in impls:  # interpret mode runs the kernels' own maths: as close to XLA as XLA's dtype allows
        assert row[impl]["pass"] is True and row[impl]["outputs"] < row["tolerance"], (kernel, dtype, impl)
  speed = data["parts"]["speed"]
  assert tuple(speed["entries"]) == accelerator.SPEED_ENTRIES
  for r in speed["entries"].values():
    assert r["bytes_per_s"] > 0 and r["batch"] == 8 and r["planned_memory_gib"] > 0
  assert not speed["entries"]["mamba2_stack_pallas"]["kernels"]  # CPU interprets Pallas: no kernel calls
  assert 0.8 < speed["hnet_over_flat_fwd_flops_per_byte"] < 1.25  # the flat model's depth matches H-Net's FLOPs
  assert "nothing measured" in data["parts"]["memory"]["note"]  # CPU has no device memory statistics
  assert [r["batch"] for r in data["parts"]["generation"]["rows"]] == [1, 16]
  assert all(r["bytes_per_s"] > 0 for r in data["parts"]["generation"]["rows"])
  out = capsys.readouterr().out
  assert "| ssd | bfloat16 | pallas_gpu_interpret |" in out and "| hnet_1stage_L | 8 x 64 |" in out


def test_the_watchdog_saves_what_there_is_and_exits(tmp_path):
  env = dict(os.environ, XLA_FLAGS=xla_flags(1))
  proc = subprocess.run([sys.executable, "-m", "bench.accelerator", "--variant", "tiny", "--out_dir", str(tmp_path),
                         "--parts", "environment", "kernels", "--budget_s", "1"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 3, proc.stderr[-2000:]
  [name] = os.listdir(tmp_path)
  with open(tmp_path / name, encoding="utf-8") as f:
    data = json.load(f)
  assert "watchdog after 1 s" in data["stopped"]
  assert data["parts"]["environment"]["device_count"] == 1 and "kernels" not in data["parts"]
  assert "Stopped early" in proc.stdout


def test_batch_is_halved_until_xlas_plan_fits():
  c = flat.get_config("tiny")
  c.train.batch_size = 8
  at_8 = train_step.run(c, steps=1, warmup=0)
  c.train.batch_size = 16
  fitted = train_step.run(c, steps=1, warmup=0, fit_bytes=int(at_8["planned_memory_gib"] * 2**30))
  assert fitted["batch"] == 8 and fitted["planned_memory_gib"] == at_8["planned_memory_gib"]
  c.train.batch_size = 8  # halving would leave fewer rows than the 8 devices: it stops at 8
  assert train_step.run(c, steps=1, warmup=0, fit_bytes=1)["batch"] == 8


def test_memory_truth_compares_the_measured_peak_with_the_plan_and_the_fit_table():
  gib = 2**30
  speed = {"entries": {"hnet_1stage_L": {"batch": 16, "seq_len": 8192, "step_time_s": 1.0,
                                         "peak_memory_gib": 44.0, "planned_memory_gib": 40.0}}}
  m = accelerator.memory_truth(speed)
  assert m["measured_peak_bytes"] == 44 * gib and m["measured_over_planned"] == pytest.approx(1.1)
  table = accelerator.fit_table_prediction("hnet_1stage_L", 16, 8192)  # committed by bench.will_it_fit
  assert table["target"] == "h100" and 30e9 < table["total_bytes"] < 45e9
  assert m["measured_over_fit_table"] == pytest.approx(44 * gib / table["total_bytes"])
  assert accelerator.fit_table_prediction("hnet_1stage_L", 3, 8192) is None
  assert "did not run" in accelerator.memory_truth({"entries": {}})["skipped"]


@pytest.mark.parametrize("platform,kind,slug", [
    ("gpu", "NVIDIA H200", "h200"), ("gpu", "NVIDIA H100 80GB HBM3", "h100"), ("gpu", "NVIDIA A100-SXM4-80GB", "a100"),
    ("tpu", "TPU v5p", "tpu_v5p"), ("cpu", "cpu", "cpu")])
def test_device_slug_names_the_results_file(platform, kind, slug):
  assert accelerator.device_slug(SimpleNamespace(platform=platform, device_kind=kind)) == slug


def test_packed_segments_hold_several_documents_a_single_byte_one_and_padding():
  seg = accelerator.packed_segments(2, 80)
  for row in seg:
    ids, counts = np.unique(row[row > 0], return_counts=True)
    assert len(ids) >= 3 and row[-1] == 0 and np.all(np.diff(row[row > 0]) >= 0)
  assert 1 in np.unique(seg[0][seg[0] > 0], return_counts=True)[1]  # a one-byte document


def test_relative_error_is_scaled_by_the_reference():
  assert accelerator.relative_error([1.0, 2.0], [1.0, 4.0]) == pytest.approx(0.5)
  assert accelerator.relative_error([3.0], [3.0]) == 0.0
