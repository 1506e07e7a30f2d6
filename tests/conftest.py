"""Test set-up: 8 fake CPU devices (set before jax is imported), strict numerics."""
import os

# The suite compiles hundreds of tiny programs and runs each a few times: LLVM's optimisations cost
# more than they save (about a quarter of the suite's time). Semantics are unchanged (no fast math).
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def xla_flags(devices: int) -> str:
  """XLA_FLAGS for a test process (subprocesses too) with `devices` fake CPU devices."""
  return f"{os.environ.get('HNET_USER_XLA_FLAGS', '')} {FAST_COMPILE} --xla_force_host_platform_device_count={devices}".strip()


os.environ.setdefault("HNET_USER_XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
os.environ["XLA_FLAGS"] = xla_flags(8)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_default_matmul_precision", "highest")

# Identical programs compiled by several tests (e.g. a straight and a resumed training run)
# are compiled once per session. Subprocess tests inherit the directory through the env.
import tempfile  # noqa: E402

_CACHE_DIR = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="hnet-jax-cache-"))
jax.config.update("jax_compilation_cache_dir", _CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_hnet_run(tmp_path_factory):
  """(workdir, data_dir) of a 2-step tiny hnet_1stage run on 8 devices, shared by the eval tests."""
  from hnet.train import trainer  # pylint: disable=import-outside-toplevel
  from tests.helpers import load_config  # pylint: disable=import-outside-toplevel
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  workdir = str(tmp_path_factory.mktemp("run"))
  c = load_config("hnet_1stage")
  c.data.data_dir = data_dir
  c.train.num_steps = 2
  c.train.batch_size = 8  # divisible by the 8 test devices
  c.train.eval_batches = 1
  c.model.remat = "none"  # compiles faster; no effect on the numbers
  c.ckpt.async_save = False
  trainer.train_and_evaluate(c, workdir, progress=False)
  return workdir, data_dir
