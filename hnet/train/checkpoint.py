"""Orbax checkpoints of the train state, the grain data iterator and the config.

One `CheckpointManager`; each step is a Composite of `state` (params, optimizer,
controller, step), `data` (grain iterator state, per process) and `config` (JSON).
Restoring takes an abstract target carrying shardings, so a checkpoint written on one
mesh restores onto another.

Every step this process saves gets `SHA256SUMS` (hnet/train/checksums.py) once it is committed.
A step that does not read back, or whose bytes differ from its checksums, is corrupt: it is moved
aside to `<step>.corrupt-<UTC time>` (kept, outside orbax's step names, one warning line) and the
previous step is restored, so training runs on past it. A step whose checksums match but which
does not restore is not corrupt: the config differs from the run's, and that is a one-line error.

A checkpoint whose `state` holds only `params` (hnet.convert writes one at step 0) is not a
resumable train state: `restore` passes over it and `restore_params` reads it, so a training
run in that work dir starts from those parameters with a fresh optimizer (fine-tuning).

The directory may be local or in a bucket (gs://, s3://: hnet/storage.py); orbax writes arrays there
through TensorStore's own gcs/s3 drivers.
"""
import logging
import os
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from hnet import storage
from hnet.train import checksums
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


def reason(error: BaseException) -> str:
  """`<type>: <first line>` of a restore error. Orbax wraps TensorStore's error in one that ends with a dump
  (`See full TensorStore details: <bound method ...>`): the wrapped error is the reason."""
  while "See full TensorStore details" in str(error) and (error.__cause__ or error.__context__) is not None:
    error = error.__cause__ or error.__context__
  first = next((ln.strip() for ln in str(error).splitlines() if ln.strip()), "")
  first = first.split("See full TensorStore details")[0].rstrip(" .")
  return f"{type(error).__name__}: {first[:200]}" if first else type(error).__name__


def _grain_args():
  import grain  # pylint: disable=import-outside-toplevel
  return grain.checkpoint.CheckpointSave, grain.checkpoint.CheckpointRestore


class Checkpointer:

  def __init__(self, directory: str, *, keep: int = 3, async_save: bool = True, owner: bool = False):
    """`owner`: the training process (it holds the work dir's lock): removes unfinished saves of earlier
    processes (a kill during an async save); readers (eval.py, --init_from) leave them alone."""
    self.directory = storage.resolve(directory)
    self.manager = ocp.CheckpointManager(
        storage.path(self.directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                             create=True, cleanup_tmp_directories=owner))
    self._unsealed: set[int] = set()  # saved by this process, checksums not yet written

  def step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state: Any, data_iter: Any = None, config: dict | None = None) -> None:
    self._seal_finished()
    save_data, _ = _grain_args() if data_iter is not None else (None, None)
    items = {"state": ocp.args.StandardSave(state)}
    if data_iter is not None:
      items["data"] = save_data(data_iter)
    if config is not None:
      items["config"] = ocp.args.JsonSave(config)
    self.manager.save(step, args=ocp.args.Composite(**items), force=True)
    self._unsealed.add(step)

  def _seal_finished(self) -> None:
    """Checksums for the steps this process saved, once their (async) save has finished; process 0 writes them."""
    if not self._unsealed:
      return
    self.manager.wait_until_finished()  # orbax's next save waits for it too
    if jax.process_index() == 0:
      for s in sorted(self._unsealed & set(self.all_steps())):
        checksums.seal(self.step_dir(s))
    self._unsealed.clear()

  def restore(self, abstract_state: Any, data_iter: Any = None, step: int | None = None
              ) -> tuple[Any, int] | None:
    """Restores `step` (default: the newest one that reads back), or returns None when there is none.

    Without `step`, corrupt steps on the way are moved aside (`<step>.corrupt-<time>`); a step that is intact
    but does not restore into `abstract_state` is a one-line ValueError.
    """
    if step is not None and self.params_only(step):
      raise ValueError(f"checkpoint step {step} under {self.directory} holds parameters only, no train state")
    steps = [step] if step is not None else [s for s in self.all_steps()[::-1] if not self.params_only(s)]
    _, restore_data = _grain_args() if data_iter is not None else (None, None)
    for s in steps:
      verified = False
      try:
        verified = checksums.verify(self.step_dir(s))
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iter is not None:
          items["data"] = restore_data(data_iter)
        restored = self.manager.restore(s, args=ocp.args.Composite(**items))
      except Exception as e:  # pylint: disable=broad-except
        why = str(e) if isinstance(e, checksums.CorruptCheckpoint) else reason(e)
        if step is not None:
          raise ValueError(f"cannot restore checkpoint step {s} under {self.directory}: {why}") from None
        if not isinstance(e, checksums.CorruptCheckpoint) and verified:
          raise ValueError(f"checkpoint step {s} under {self.directory} is intact (its checksums match) but does not "
                           f"restore into the train state of this config ({why}): train it with the run's own "
                           "config") from None
        self._set_aside(s, why)
        continue
      return restored["state"], s
    return None

  def _set_aside(self, step: int, why: str) -> None:
    """Moves corrupt step `step` out of orbax's view (kept, renamed) so that training can save that step again."""
    aside = os.path.join(self.directory, f"{step}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    _sync(f"hnet-set-aside-{step}")  # every process has passed over the step before it moves
    if jax.process_index() == 0:
      storage.move(self.step_dir(step), aside)
      log.warning("checkpoint step %d under %s is corrupt (%s): moved aside to %s; trying an older one",
                  step, self.directory, why, os.path.basename(aside))
    _sync(f"hnet-set-aside-{step}-done")
    self.manager.reload()

  def _state_tree(self, step: int):
    """The saved `state` item's tree of array metadata; a one-line ValueError when it cannot be read."""
    try:
      meta = ocp.PyTreeCheckpointHandler().metadata(epath.Path(self.directory) / str(step) / "state")
    except Exception as e:  # pylint: disable=broad-except  (unfinished or foreign directory)
      raise ValueError(f"checkpoint step {step} under {self.directory} has no readable train state "
                       f"({reason(e)})") from None
    return getattr(meta, "tree", meta)

  def params_only(self, step: int) -> bool:
    """True when checkpoint `step` holds model parameters and nothing else (written by hnet.convert)."""
    try:
      tree = self._state_tree(step)
    except ValueError:
      return False
    return isinstance(tree, dict) and set(tree) == {"params"}

  def restore_params(self, abstract_params: Any, step: int | None = None, what: str | None = None
                     ) -> tuple[Any, int] | None:
    """(params, step): only the parameters of checkpoint `step` (orbax partial restore: no optimizer state, no
    data iterator), placed as `abstract_params` (ShapeDtypeStructs with shardings) says.

    Without `step`: the newest parameters-only checkpoint (fine-tuning), or None when there is none.
    `what` says what the parameters are for in a mismatch's message (default: the model of the checkpoint's config).
    A parameter that differs from the model's, or a checkpoint that does not read back, is a one-line ValueError.
    """
    if step is None:
      steps = [s for s in self.all_steps()[::-1] if self.params_only(s)]
      if not steps:
        return None
      step = steps[0]
      where = f"parameters at step {step} under {self.directory} do not fit the model of this config"
    else:
      where = (f"checkpoint step {step} under {self.directory} does not match "
               f"{what or 'the model built from its config'}")
    try:
      checksums.verify(self.step_dir(step))
    except checksums.CorruptCheckpoint as e:
      raise ValueError(f"checkpoint step {step} under {self.directory} is corrupt: {e}") from None
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
      raise ValueError(f"cannot restore step {step} from {self.directory}: {reason(e)}") from None
    return restored["params"], step

  def restore_config(self, step: int | None = None) -> dict:
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint under {self.directory}")
    return self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]

  def close(self) -> None:
    self._seal_finished()
    self.manager.wait_until_finished()
    self.manager.close()


def _sync(name: str) -> None:
  """A barrier across processes (multi-host); nothing on one process."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices(name)
