"""Orbax checkpoints of the train state, the grain data iterator and the config.

One `CheckpointManager`; each step is a Composite of `state` (params, optimizer,
controller, step), `data` (grain iterator state, per process) and `config` (JSON).
Restoring takes an abstract target carrying shardings, so a checkpoint written on one
mesh restores onto another. A partial or corrupt latest checkpoint is skipped with a
warning in favour of the previous good one.
"""
import logging
import os
from typing import Any

import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


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
    steps = [step] if step is not None else self.all_steps()[::-1]
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

  def restore_config(self, step: int | None = None) -> dict:
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint under {self.directory}")
    return self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
