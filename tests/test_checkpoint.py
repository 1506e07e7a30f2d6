"""The one parameter-shape check (resuming, loading a run, BLT's entropy LM); corrupt steps found and moved aside."""
import glob
import logging
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hnet.train import checksums
from hnet.train.checkpoint import Checkpointer, check_param_shapes


def test_param_shape_check_names_the_first_differing_parameter():
  model = {"a": {"w": jax.ShapeDtypeStruct((2, 3), np.float32)}, "b": np.zeros((4,))}
  check_param_shapes({"a": {"w": np.zeros((2, 3))}, "b": np.zeros((4,))}, model, "here")
  with pytest.raises(ValueError, match=r"^run: parameter a/w has shape \(3, 2\) in the checkpoint but \(2, 3\) in the "
                                       r"model$"):
    check_param_shapes({"a": {"w": np.zeros((3, 2))}, "b": np.zeros((5,))}, model, "run")
  with pytest.raises(ValueError, match=r"^run: parameter b is missing from the checkpoint$"):
    check_param_shapes({"a": {"w": np.zeros((2, 3))}}, model, "run")
  with pytest.raises(ValueError, match=r"^run: the model has no parameter a/v$"):
    check_param_shapes({"a": {"v": np.zeros(()), "w": np.zeros((2, 3))}, "b": np.zeros((4,))}, model, "run")


# ---------------------------------------------------------------------------------------------
# Corrupt steps: detected (checksums), moved aside, training saves that step again
# ---------------------------------------------------------------------------------------------
def _state(scale: float):
  """A train-state-like tree whose optimizer moments are the bulk of the bytes (so the largest data file)."""
  return {"params": {"w": jnp.full((8, 8), scale)},
          "opt_state": {"mu": jnp.arange(64 * 256, dtype=jnp.float32).reshape(64, 256) * scale,
                        "nu": jnp.full((64, 256), scale)}}


def _abstract(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def _saved(tmp_path, steps=(2, 4), async_save=True) -> Checkpointer:
  ckpt = Checkpointer(str(tmp_path / "checkpoints"), async_save=async_save)
  for s in steps:
    ckpt.save(s, _state(float(s)), config={"step": s})
  ckpt.close()
  return Checkpointer(str(tmp_path / "checkpoints"))


def _largest_data_file(ckpt: Checkpointer, step: int) -> str:
  files = glob.glob(os.path.join(ckpt.step_dir(step), "state", "**", "d", "*"), recursive=True)
  return max(files, key=os.path.getsize)


def _assert_equal(tree, want):
  for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_every_saved_step_gets_checksums_once_its_async_save_has_finished(tmp_path):
  ckpt = _saved(tmp_path)
  for s in (2, 4):
    assert checksums.verify(ckpt.step_dir(s))
    listed = open(os.path.join(ckpt.step_dir(s), checksums.MANIFEST), encoding="utf-8").read()
    assert "state/_METADATA" in listed and "/d/" in listed
  ckpt.close()


def test_random_bytes_in_the_optimizer_state_are_a_corrupt_step_moved_aside(tmp_path, caplog):
  ckpt = _saved(tmp_path)
  path = _largest_data_file(ckpt, 4)
  with open(path, "r+b") as f:  # a few bytes in the middle: orbax alone restores them silently
    f.seek(os.path.getsize(path) // 2)
    f.write(np.random.default_rng(0).bytes(16))
  with caplog.at_level(logging.WARNING, logger="hnet.train.checkpoint"):
    state, step = ckpt.restore(_abstract(_state(0.0)))
  assert step == 2
  _assert_equal(state, _state(2.0))
  [aside] = [n for n in os.listdir(ckpt.directory) if ".corrupt-" in n]
  assert re.fullmatch(r"4\.corrupt-\d{8}T\d{6}Z", aside) and os.path.exists(os.path.join(ckpt.directory, aside, "state"))
  [line] = [r.getMessage() for r in caplog.records]
  assert re.fullmatch(rf"checkpoint step 4 under {ckpt.directory} is corrupt \(state/.*/d/\w+ does not match its "
                      rf"checksum in SHA256SUMS\): moved aside to {aside}; trying an older one", line), line
  ckpt.save(4, _state(5.0))  # the step can be written again (orbax no longer sees the bad one)
  ckpt.close()
  ckpt = Checkpointer(str(tmp_path / "checkpoints"))
  state, step = ckpt.restore(_abstract(_state(0.0)))
  assert step == 4
  _assert_equal(state, _state(5.0))
  ckpt.close()


def test_a_truncated_step_without_checksums_is_moved_aside_with_a_one_line_reason(tmp_path, caplog):
  ckpt = _saved(tmp_path)
  os.remove(os.path.join(ckpt.step_dir(4), checksums.MANIFEST))  # as a step written before checksums existed
  path = _largest_data_file(ckpt, 4)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)
  with caplog.at_level(logging.WARNING, logger="hnet.train.checkpoint"):
    assert ckpt.restore(_abstract(_state(0.0)))[1] == 2
  [line] = [r.getMessage() for r in caplog.records]
  assert "\n" not in line and "bound method" not in line and "TensorStore details" not in line, line
  assert re.match(r"checkpoint step 4 under .* is corrupt \(ValueError: OUT_OF_RANGE: Error reading .*\): moved aside",
                  line), line
  ckpt.close()


def test_an_intact_step_that_does_not_fit_is_an_error_not_corruption(tmp_path):
  ckpt = _saved(tmp_path)
  other = _abstract({**_state(0.0), "params": {"w": jnp.zeros((4, 4))}})
  with pytest.raises(ValueError, match=r"^checkpoint step 4 under .* is intact \(its checksums match\) but does not "
                                       r"restore into the train state of this config \(.*\): train it with the run's "
                                       r"own config$"):
    ckpt.restore(other)
  assert ckpt.all_steps() == [2, 4] and not [n for n in os.listdir(ckpt.directory) if "corrupt" in n]
  ckpt.close()


def test_a_named_corrupt_step_is_a_one_line_error(tmp_path):
  ckpt = _saved(tmp_path, async_save=False)
  with open(_largest_data_file(ckpt, 2), "r+b") as f:
    f.write(b"\0" * 8)
  with pytest.raises(ValueError, match=r"^cannot restore checkpoint step 2 under .*: state/.* does not match its "
                                       r"checksum in SHA256SUMS$"):
    ckpt.restore(_abstract(_state(0.0)), step=2)
  with pytest.raises(ValueError, match=r"^checkpoint step 2 under .* is corrupt: state/.* does not match"):
    ckpt.restore_params({"w": jax.ShapeDtypeStruct((8, 8), np.float32)}, step=2)
  assert ckpt.all_steps() == [2, 4]  # named steps are reported, never moved
  ckpt.close()
