"""A careless user's input to train.py / eval.py: one line naming what to change, exit != 0, never a silent run.

The exact commands, as subprocesses (the command line is the contract). Each answer comes before any
model is built, except where the checkpoint must be read first (eval.py --split).
"""
import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

from hnet.evals import commands
from hnet.configs import base
from tests.conftest import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "XLA_FLAGS": xla_flags(1), "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], capture_output=True, text=True,
                        timeout=300, cwd=ROOT, env=ENV, check=False)


def _one_line(proc: subprocess.CompletedProcess, status: int, message: str) -> None:
  assert proc.returncode == status, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert proc.stderr.strip().splitlines()[-1].startswith(message), proc.stderr[-3000:]


def _train(*args: str) -> subprocess.CompletedProcess:
  return _run("train.py", "--config", os.path.join(ROOT, "configs/hnet_1stage.py:tiny"), "--progress=false", *args)


@pytest.mark.parametrize("arg,message", [
    ("--config.data.text_paths=x.txt", "train.py: error: data.text_paths='x.txt' is read only with "
     "data.dataset='text' (it is 'builtin'): add --config.data.dataset=text"),
    ("--config.train.num_steps=-5", "train.py: error: train.num_steps=-5 must be an integer >= 1"),
    ("--config.opt.lr=-1", "train.py: error: opt.lr=-1.0 must be a number > 0.0"),
    ("--config.train.eval_every=0", "train.py: error: train.eval_every=0 must be an integer >= 1"),
])
def test_train_refuses_values_it_would_silently_misuse(arg, message, tmp_path):
  proc = _train(arg, f"--workdir={tmp_path / 'run'}")
  _one_line(proc, 1, message)
  assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.parametrize("script", ["train.py", "eval.py"])
def test_a_mistyped_key_is_one_line_without_a_config_file_too(script, tmp_path):
  """Without --config the default file is loaded (and the overrides applied) when the flag is defined."""
  proc = _run(script, f"--workdir={tmp_path}", "--config.eval.bpb_batchez=2")
  _one_line(proc, 2, f"{script}: error: unknown config key 'bpb_batchez' (Did you mean \"bpb_batches\"")


def _unwritable(tmp_path) -> str:
  """A directory nobody may write: read-only for a user; for root, a path under /sys (EPERM/EROFS)."""
  if os.geteuid() != 0:
    tmp_path.chmod(0o555)
    return str(tmp_path / "run")
  path = "/sys/hnet-test-unwritable/run"
  try:
    os.makedirs(path)
  except OSError:
    return path
  pytest.skip("/sys is writable here")  # never seen: sysfs refuses new directories


def test_train_on_an_unwritable_workdir_is_one_line(tmp_path):
  workdir = _unwritable(tmp_path)
  proc = _train(f"--workdir={workdir}")
  _one_line(proc, 1, f"train.py: error: --workdir={workdir!r} is not writable (")
  tmp_path.chmod(0o755)


@pytest.mark.skipif(importlib.util.find_spec("jax_cuda12_plugin") is not None, reason="the CUDA compiler is here")
def test_aot_for_a_gpu_without_the_cuda_extra_is_one_line(tmp_path):
  proc = _train("--aot=h100", f"--workdir={tmp_path}")
  _one_line(proc, 1, "train.py: error: --aot h100: no CUDA compiler")
  assert 'pip install -e ".[cuda]"' in proc.stderr


@pytest.mark.parametrize("arg,message", [
    ("--temperature=-1", "flag --temperature=-1: -1.0 is not a non-negative number"),
    ("--temperature=nan", "flag --temperature=nan: must be a finite number >= 0"),
    ("--top_p=-3", "flag --top_p=-3: -3.0 is not a number in the range [0.0, 1.0]"),
    ("--top_p=0", "flag --top_p=0.0: must be in (0, 1]"),
    ("--top_k=-1", "flag --top_k=-1: -1 is not an integer in the range [0, 256]"),
    ("--top_k=300", "flag --top_k=300: 300 is not an integer in the range [0, 256]"),
    ("--max_bytes=0", "flag --max_bytes=0: 0 is not a positive integer"),
])
def test_generate_refuses_settings_it_would_misread(arg, message, tmp_path):
  proc = _run("eval.py", f"--workdir={tmp_path}", "generate", "--prompt=The ", arg)
  _one_line(proc, 2, f"eval.py: error: {message}")


@pytest.fixture(scope="module")
def run_copy(tiny_hnet_run, tmp_path_factory):
  """A copy of the tiny run (the tests below change its work dir), without other tests' eval/ results."""
  workdir = str(tmp_path_factory.mktemp("bad-input") / "run")
  shutil.copytree(tiny_hnet_run[0], workdir, ignore=shutil.ignore_patterns("eval"))
  return workdir


def test_eval_names_its_own_flag_for_a_missing_split(run_copy):
  proc = _run("eval.py", f"--workdir={run_copy}", "bpb", "--split=nosuch")
  _one_line(proc, 1, "eval.py: error: split 'nosuch' is not in hnet_builtin (splits: ['train', 'validation'])")
  assert "data.eval_split" not in proc.stderr  # the flag was --split, not a config key


def test_eval_prints_its_result_before_a_failed_write(run_copy):
  """A work dir eval.py cannot write into: the table is printed, then one line says it was not saved."""
  with open(os.path.join(run_copy, "eval"), "w", encoding="utf-8") as f:
    f.write("a file where eval.py would make its directory\n")
  proc = _run("eval.py", f"--workdir={run_copy}", "bpb", "--config.eval.bpb_batches=1")
  assert "| bits/byte |" in proc.stdout, proc.stdout + proc.stderr[-3000:]
  _one_line(proc, 1, f"eval.py: error: cannot write {run_copy}/eval/bpb_step2_validation.json (")
  assert "the result printed above was not saved" in proc.stderr


def test_results_are_named_by_what_was_evaluated():
  """bpb on the eval split, on another split and on a text file no longer overwrite one file."""
  loaded = type("Loaded", (), {"workdir": "/w", "step": 4, "config": base.get_config()})()
  named = {cmd + " " + repr(kw): os.path.basename(commands.json_path(cmd, loaded, commands.Options(**kw)))
           for cmd, kw in [("bpb", {}), ("bpb", {"split": "train[:1%]"}), ("bpb", {"text_file": "/a/notes.txt"}),
                           ("noise", {}), ("mc", {"hellaswag_file": "/d/hellaswag_val.jsonl"}), ("generate", {})]}
  assert list(named.values()) == ["bpb_step4_validation.json", "bpb_step4_train-1pct.json",
                                  "bpb_step4_text-notes.json", "noise_step4_validation.json",
                                  "mc_step4_hellaswag-hellaswag_val.json", "generate_step4.json"]
  assert commands.json_path("bpb", loaded, commands.Options(out="/x/y.json")) == "/x/y.json"
