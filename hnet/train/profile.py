"""An XProf trace of chosen training steps (`train.profile_steps=(start, count)`) in `<workdir>/profile/`.

TensorBoard's profile plugin (or XProf) reads it: `tensorboard --logdir <workdir>/profile`. The
trace starts before step `start` is dispatched and stops once step `start + count - 1` has
finished on the device: dispatch is asynchronous, so stopping without waiting would cut the
device's work out of the trace.
"""
import logging
import os

import jax

log = logging.getLogger(__name__)


class StepProfiler:
  """Starts and stops `jax.profiler`'s trace around the configured steps (1-based, as logged)."""

  def __init__(self, workdir: str, steps: tuple, enabled: bool):
    self.first, self.last = (steps[0], steps[0] + steps[1] - 1) if steps and enabled else (0, -1)
    self.directory = os.path.join(workdir, "profile")
    self.active = False

  def before(self, step: int) -> None:
    """Call before dispatching `step`."""
    if step == self.first:
      jax.profiler.start_trace(self.directory)
      self.active = True

  def after(self, step: int, outputs) -> None:
    """Call after dispatching `step` with its outputs; blocks on them when the trace ends here."""
    if self.active and step >= self.last:
      jax.block_until_ready(outputs)
      self.stop()
      log.info("profile of steps %d..%d in %s", self.first, self.last, self.directory)

  def stop(self) -> None:
    """Ends a running trace (also when the loop stops early)."""
    if self.active:
      self.active = False
      jax.profiler.stop_trace()
