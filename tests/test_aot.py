"""`train.py --aot`: the training step compiled ahead of time for a TPU slice on this CPU host (libtpu)."""
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from hnet import sharding
from hnet.configs import hnet_1stage
from hnet.train import accelerators, aot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
requires_libtpu = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                     reason="TPU targets need libtpu: pip install -e '.[test]' brings it")


@pytest.mark.parametrize("name, platform, devices, topology", [
    ("v5p-8", "tpu", 4, "v5p:2x2x1"), ("v5p-128", "tpu", 64, "v5p:4x4x4"), ("v4-32", "tpu", 16, "v4:2x2x4"),
    ("v5e-16", "tpu", 16, "v5e:4x4"), ("v6e-8", "tpu", 8, "v6e:2x4"), ("v5litepod-4", "tpu", 4, "v5e:2x2"),
    ("2xv5p-128", "tpu", 128, "v5p:4x4x4"),
    ("h100", "cuda", 1, "1x1x1"), ("h100x8", "cuda", 8, "1x1x8"), ("a100", "cuda", 1, "1x1x1")])
def test_target_names(name, platform, devices, topology):
  t = accelerators.parse(name)
  assert (t.platform, t.num_devices, t.topology) == (platform, devices, topology)
  assert 0 < t.usable_bytes <= t.memory_bytes
  if platform == "cuda":
    assert os.path.exists(t.target_config)


@pytest.mark.parametrize("name, message", [
    ("v5p-6", "power of two"), ("v5p-7", "TensorCores"), ("tpu9-8", "unknown target"), ("h100x16", "1 to 8")])
def test_bad_target_names_say_what_is_known(name, message):
  with pytest.raises(ValueError, match=message):
    accelerators.parse(name)


@pytest.fixture(scope="module")
def tiny_report():
  c = hnet_1stage.get_config("tiny")
  c.mesh.data, c.mesh.fsdp = 1, -1
  c.train.batch_size = 16  # 4 rows per device
  target = accelerators.parse("v5e-4")
  return aot.compile_train_step(c, target), c


@requires_libtpu
def test_tiny_train_step_compiles_for_a_tpu_slice_and_fits(tiny_report):
  r, c = tiny_report
  assert r.mesh == {"data": 1, "fsdp": 4, "tensor": 1} and r.rows_per_device == 4
  assert r.argument_bytes > 0 and r.alias_bytes > 0  # the state is donated
  assert r.total_bytes > r.argument_bytes + r.code_bytes  # activations live beside the state
  # fp32 params + two AdamW moments, sharded 4 ways (embedding and norms may stay whole): a lower bound.
  assert r.argument_bytes >= 3 * 4 * r.num_params / 4
  assert r.fits and r.total_bytes < 1e9
  assert r.has_loops and r.xla_seconds is None  # scanned layers: XLA's time estimate is not valid
  assert r.xla_flops is not None and r.xla_flops > 0
  text = aot.format_report(r, "hnet_1stage:tiny")
  assert "fits" in text and "advice" not in text


@requires_libtpu
def test_two_slices_compile_with_the_gradient_sum_over_dcn():
  """2xv5p-8: data parallel over the two slices (mesh.dcn_data=2), FSDP inside each; the gradients cross DCN."""
  c = hnet_1stage.get_config("tiny")
  c.mesh.data, c.mesh.fsdp, c.mesh.dcn_data = 1, -1, 2
  c.train.batch_size = 16
  target = accelerators.parse("2xv5p-8")
  devices = accelerators.devices(target)
  assert target.num_slices == 2 and sorted({d.slice_index for d in devices}) == [0, 1]
  mesh = sharding.mesh_of_config(c.mesh, devices)
  assert [{d.slice_index for d in row.flat} for row in mesh.devices] == [{0}, {1}]  # data's outer part: the slice
  r = aot.compile_train_step(c, target, devices)
  assert r.mesh == {"data": 2, "fsdp": 4, "tensor": 1} and r.rows_per_device == 2 and r.fits
  # Each slice sums its gradients over ICI; the two halves meet over DCN: at least the parameters' float32 bytes.
  assert r.dcn["all-reduce"]["count"] > 0 and r.dcn["all-reduce"]["bytes"] >= 4 * r.num_params / 4
  text = aot.format_report(r, "hnet_1stage:tiny")
  assert "2xv5p-8: 8 chips (2 slices of v5p:2x2x1)" in text and "collectives over DCN between the 2 slices: " in text
  c.mesh.dcn_data = 1
  with pytest.raises(ValueError, match="the devices span 2 slices but mesh.dcn_data.dcn_fsdp=1: set --config.mesh.dcn_data=2"):
    sharding.mesh_of_config(c.mesh, devices)


def test_dcn_collectives_in_a_loop_count_once_per_iteration():
  """The shape of a compiled multi-slice program: a send to the Megascale runtime in ENTRY and one in a scan's body."""
  send = ('  %send.{i} = ({t}, u32[], token[]) send(%x, %after-all.{i}), channel_id={i}, is_host_transfer=true, '
          'frontend_attributes={{_xla_megascale_transfer_type="ALL_REDUCE"}}')
  hlo = "\n".join([
      "%cond.1 (p: (s32[])) -> pred[] {", "  %constant.7 = s32[]{:T(128)} constant(27)",
      "  ROOT %lt.1 = pred[]{:T(512)} compare(%gte.1, %constant.7), direction=LT", "}",
      "%body.1 (p: (s32[])) -> (s32[]) {", send.format(i=1, t="bf16[4,8,128]{2,1,0:T(8,128)(2,1)}"), "}",
      "ENTRY %main (p: f32[]) -> f32[] {",
      "  %while.1 = (s32[]) while(%t), condition=%cond.1, body=%body.1",
      ' "xprof_metadata":"{}"',  # attribute text spanning lines does not end the computation
      send.format(i=2, t="f32[2,8,128]{2,1,0:T(8,128)}"), "}"])
  assert aot.dcn_collectives(hlo) == {"all-reduce": {"count": 2, "in_loops": 1, "bytes": 27 * 4 * 8 * 128 * 2 + 2 * 8 * 128 * 4}}


@requires_libtpu
def test_a_step_that_does_not_fit_gets_one_line_of_advice(tiny_report):
  r, _ = tiny_report
  fixed = r.fixed_bytes
  small = dataclasses.replace(r.target, usable_bytes=fixed + (r.total_bytes - fixed) // 2)
  over = dataclasses.replace(r, target=small)
  assert not over.fits
  text = aot.format_report(over)
  assert "DOES NOT FIT" in text
  advice = text.splitlines()[-1]
  assert advice.startswith("advice: ") and "--config." in advice
  # Half the temporaries fit: about half the rows, kept as gradient accumulation.
  assert "grad_accum_steps=2" in advice
  replicated = dataclasses.replace(over, mesh={"data": 4, "fsdp": 1, "tensor": 1})
  assert "--config.mesh.fsdp=-1" in aot.advice(replicated)
  no_room = dataclasses.replace(r.target, usable_bytes=fixed // 2)
  assert "state alone" in aot.advice(dataclasses.replace(r, target=no_room))


@requires_libtpu
def test_train_py_aot_exits_zero_and_writes_the_report(tmp_path):
  out = tmp_path / "report.json"
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run(
      [sys.executable, "train.py", "--config", "configs/flat.py:tiny", "--config.data.seq_len=256",
       "--config.model.dtype=bfloat16", "--aot", "v5p-8", "--aot_report", str(out), "--workdir", str(tmp_path / "never")],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "fits" in proc.stdout and "v5p-8: 4 chips" in proc.stdout
  assert "train step of configs/flat.py:tiny for" in proc.stdout  # the config named in the report
  report = json.loads(out.read_text())
  assert report["fits"] and report["devices"] == 4 and report["platform"] == "tpu"
  # attention_impl 'auto' on a TPU target: the splash kernels, forward and backward (256 tiles by 128).
  assert any(k.startswith("splash_mha_fwd") for k in report["kernels"]), report["kernels"]
  assert any(k.startswith("splash_mha_dkv") for k in report["kernels"]), report["kernels"]
  assert not (tmp_path / "never").exists()  # a compile, not a run: nothing written
  # No TPU here: libtpu's warnings about this host's type and workers (6 lines, an E0000) are not printed.
  assert "TPU_WORKER_HOSTNAMES" not in proc.stderr and "E0000" not in proc.stderr, proc.stderr[-2000:]


@requires_libtpu
def test_a_compile_refused_for_memory_is_a_step_that_does_not_fit(monkeypatch):
  """The TPU compiler refuses a program whose temporaries exceed HBM: a report that does not fit, not a crash."""
  import jax  # pylint: disable=import-outside-toplevel
  refusal = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries "
             "(389.82G) exceeds available HBM (15.75G).")
  compile_ = jax.stages.Lowered.compile

  def refuse_the_step(self, *args, **kwargs):
    if "train_step" in self.as_text()[:2000]:
      raise jax.errors.JaxRuntimeError(refusal)
    return compile_(self, *args, **kwargs)

  monkeypatch.setattr(jax.stages.Lowered, "compile", refuse_the_step)
  c = hnet_1stage.get_config("tiny")
  c.mesh.data, c.mesh.fsdp = 1, -1
  r = aot.compile_train_step(c, accelerators.parse("v5e-4"))
  assert not r.fits and r.temp_bytes == int(389.82 * 2**30) and "refused" in r.note
  batch_bytes = 4 * 64 * 4 * 4 // 4  # 4 rows x 64 bytes, 4 int32/float32 arrays, over 4 chips
  assert r.alias_bytes > 0 and r.argument_bytes == r.alias_bytes + batch_bytes  # the state is donated, the batch not
  assert "advice: " in aot.format_report(r)



def _libtpu_lock_is_free() -> bool:
  """libtpu's host lock: the process that takes it initializes libtpu (and warns); the others skip quietly."""
  path = "/tmp/libtpu_lockfile"
  if not os.path.exists(path):
    return True
  import fcntl  # pylint: disable=import-outside-toplevel
  fd = os.open(path, os.O_RDWR)
  try:
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    fcntl.lockf(fd, fcntl.LOCK_UN)
    return True
  except OSError:
    return False
  finally:
    os.close(fd)


@requires_libtpu
def test_train_py_on_a_host_without_tpus_prints_no_libtpu_warnings(tmp_path):
  """jax's start loads libtpu when JAX_PLATFORMS is unset; on a host without TPUs, the process that takes
  libtpu's lock used to print 6 lines of warnings and an E0000 INVALID_ARGUMENT in every command."""
  if not _libtpu_lock_is_free():
    pytest.skip("another process holds libtpu's lock: libtpu would not initialize (nor warn) here")
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS" and not k.startswith("TPU_")}
  proc = subprocess.run(
      [sys.executable, "train.py", "--config", "configs/hnet_1stage.py:tiny", "--progress=false",
       "--config.train.batch_size=8", "--config.data.dataset=no_such_dataset", "--workdir", str(tmp_path / "run")],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 1 and "unknown data.dataset='no_such_dataset'" in proc.stderr, proc.stderr[-2000:]
  assert "TPU_ACCELERATOR_TYPE" not in proc.stderr and "E0000" not in proc.stderr, proc.stderr[-2000:]
