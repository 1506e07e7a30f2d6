"""Orbax checkpoints of the train state, the grain data iterator and the config.

One `CheckpointManager`; each step is a Composite of `state` (params, optimizer,
controller, step), `data` (grain iterator state, per process) and `config` (JSON).
Restoring takes an abstract target carrying shardings, so a checkpoint written on one
mesh restores onto another. A partial or corrupt latest checkpoint is skipped with a
warning in favour of the previous good one.

A checkpoint whose `state` holds only `params` (hnet.convert writes one at step 0) is not a
resumable train state: `restore` passes over it and `restore_params` reads it, so a training
run in that work dir starts from those parameters with a fresh optimizer (fine-tuning).
"""
import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from hnet.train.optim import path_names

log = logging.getLogger(__name__)


def param_shapes(tree) -> dict[tuple[str, ...], tuple[int, ...]]:
  """Parameter name (its path) -> shape, of arrays, ShapeDtypeStructs or a checkpoint's array metadata."""
  return {path_names(p): tuple(x.shape) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def check_param_shapes(saved: Any, model: Any, where: str) -> None:
  """A one-line ValueError `<where>: ...` naming the first parameter (by name) that the checkpoint's tree
  `saved` and the model's tree `model` do not both hold with one shape."""
  have, want = param_shapes(saved), param_shapes(model)
  for name in sorted(set(have) | set(want)):
    if name not in have:
      raise ValueError(f"{where}: parameter {'/'.join(name)} is missing from the checkpoint")
    if name not in want:
      raise ValueError(f"{where}: the model has no parameter {'/'.join(name)}")
    if have[name] != want[name]:
      raise ValueError(f"{where}: parameter {'/'.join(name)} has shape {have[name]} in the checkpoint "
                       f"but {want[name]} in the model")


def _grain_args():
  import grain  # pylint: disable=import-outside-toplevel
  return grain.checkpoint.CheckpointSave, grain.checkpoint.CheckpointRestore


class Checkpointer:

  def __init__(self, directory: str, *, keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                             create=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state: Any, data_iter: Any = None, config: dict | None = None) -> None:
    save_data, _ = _grain_args() if data_iter is not None else (None, None)
    items = {"state": ocp.args.StandardSave(state)}
    if data_iter is not None:
      items["data"] = save_data(data_iter)
    if config is not None:
      items["config"] = ocp.args.JsonSave(config)
    self.manager.save(step, args=ocp.args.Composite(**items), force=True)

  def restore(self, abstract_state: Any, data_iter: Any = None, step: int | None = None
              ) -> tuple[Any, int] | None:
    """Restores `step` (default: the newest one that reads back), or returns None when there is none."""
    if step is not None and self.params_only(step):
      raise ValueError(f"checkpoint step {step} under {self.directory} holds parameters only, no train state")
    steps = [step] if step is not None else [s for s in self.all_steps()[::-1] if not self.params_only(s)]
    _, restore_data = _grain_args() if data_iter is not None else (None, None)
    for s in steps:
      items = {"state": ocp.args.StandardRestore(abstract_state)}
      if data_iter is not None:
        items["data"] = restore_data(data_iter)
      try:
        restored = self.manager.restore(s, args=ocp.args.Composite(**items))
      except Exception as e:  # pylint: disable=broad-except
        if step is not None:
          raise
        log.warning("checkpoint at step %d under %s cannot be restored (%s: %s); trying an older one",
                    s, self.directory, type(e).__name__, str(e).splitlines()[0][:200])
        continue
      return restored["state"], s
    return None

  def _state_tree(self, step: int):
    """The saved `state` item's tree of array metadata; a one-line ValueError when it cannot be read."""
    try:
      meta = ocp.PyTreeCheckpointHandler().metadata(epath.Path(self.directory) / str(step) / "state")
    except Exception as e:  # pylint: disable=broad-except  (unfinished or foreign directory)
      raise ValueError(f"checkpoint step {step} under {self.directory} has no readable train state "
                       f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    return getattr(meta, "tree", meta)

  def params_only(self, step: int) -> bool:
    """True when checkpoint `step` holds model parameters and nothing else (written by hnet.convert)."""
    try:
      tree = self._state_tree(step)
    except ValueError:
      return False
    return isinstance(tree, dict) and set(tree) == {"params"}

  def restore_params(self, abstract_params: Any, step: int | None = None) -> tuple[Any, int] | None:
    """(params, step): only the parameters of checkpoint `step` (orbax partial restore: no optimizer state, no
    data iterator), placed as `abstract_params` (ShapeDtypeStructs with shardings) says.

    Without `step`: the newest parameters-only checkpoint (fine-tuning), or None when there is none.
    A parameter that differs from the model's, or a checkpoint that does not read back, is a one-line ValueError.
    """
    if step is None:
      steps = [s for s in self.all_steps()[::-1] if self.params_only(s)]
      if not steps:
        return None
      step = steps[0]
      where = f"parameters at step {step} under {self.directory} do not fit the model of this config"
    else:
      where = f"checkpoint step {step} under {self.directory} does not match the model built from its config"
    saved = self._state_tree(step)
    if not isinstance(saved, dict) or "params" not in saved:
      raise ValueError(f"checkpoint step {step} under {self.directory} holds no 'params' (not written by train.py?)")
    check_param_shapes(saved["params"], abstract_params, where)
    item = {"params": abstract_params}
    args = ocp.args.PyTreeRestore(item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
                                  partial_restore=True)
    # A checkpointer of its own: restoring through the manager would bind `state` to a handler its saves refuse.
    try:
      with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as reader:
        restored = reader.restore(epath.Path(self.directory) / str(step) / "state", args=args)
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f"cannot restore step {step} from {self.directory}: {type(e).__name__}: "
                       f"{str(e).splitlines()[0][:300]}") from None
    return restored["params"], step

  def restore_config(self, step: int | None = None) -> dict:
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint under {self.directory}")
    return self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
