"""hnet installed as a package (not the checkout): its commands run from any directory, and a run written
by the checkout loads with its missing config keys filled from the packaged defaults (hnet/configs)."""
import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
  """hnet built and installed (no dependencies, no editable link) into a fresh directory."""
  target = tmp_path_factory.mktemp("site")
  build = tmp_path_factory.mktemp("src")
  shutil.copytree(ROOT, build / "hnet_src", ignore=shutil.ignore_patterns(".git", "runs", "*.egg-info", "build",
                                                                         "__pycache__", ".whl", ".gl"))
  proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                         "--target", str(target), str(build / "hnet_src")],
                        capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return str(target)


def _run(installed, cwd, *args):
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  env.update(PYTHONPATH=installed, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
  return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
                        check=False)


def test_the_installed_package_runs_from_another_directory(installed, tmp_path):
  proc = _run(installed, tmp_path, "-m", "hnet.convert", "--help")
  assert "--pytorch" in proc.stdout and "Traceback" not in proc.stderr, proc.stderr[-2000:]  # absl's help exits 1
  where = _run(installed, tmp_path, "-c", "import hnet, hnet.configs.base; print(hnet.__file__)").stdout.strip()
  assert where.startswith(installed)  # not the checkout
  for data in (("evals", "harness", "tasks", "hellaswag_noised.yaml"), ("train", "gpu_targets", "h100_sxm.txtpb")):
    assert os.path.exists(os.path.join(installed, "hnet", *data)), data


def test_an_older_run_loads_with_defaults_from_the_packaged_configs(installed, tiny_hnet_run, tmp_path):
  workdir = tmp_path / "old_run"
  shutil.copytree(tiny_hnet_run[0], workdir)
  stored = json.loads((workdir / "config.json").read_text())
  del stored["eval"]["mc_choices"]  # a key added after this run was written
  (workdir / "config.json").write_text(json.dumps(stored))
  script = ("from hnet.train import runs\n"
            "from hnet.configs import stored\n"
            "import json, sys\n"
            "c = stored.merge_config(json.load(open(sys.argv[1] + '/config.json')), None, stored.default_config())\n"
            "print(c.eval.mc_choices)\n"
            "print(runs.load(sys.argv[1]).step)\n")
  proc = _run(installed, tmp_path, "-c", script, str(workdir))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.split() == ["4", "2"]
