"""Where a run's wall time goes (goodput), and the input-wait share of each log window.

Parts: `setup` (work dir, data preparation, model and optimizer build, up to the loop), `restore`
(reading checkpoints), `data` (next batch from the input pipeline and its host-to-device copy),
`compile` (the first step of this process: trace, compile and run once), `step` (dispatching the
later steps and fetching their metrics at log time), `eval`, `checkpoint` (saves, and waiting for
async saves at exit), and `other`, the rest of the wall time (progress bar, profile capture, loop
bookkeeping). Goodput is `step` over the wall time.

The loop does not block on every step (that would stall dispatch): the host waits on the device
only where the loop already blocks, when the pending metrics are fetched at log time. So `step`
is dispatch + that wait; while the host waits for input the device may still run the previous
step, so `data` is an upper bound on what the input pipeline costs.
"""
import contextlib
import time

PARTS = ("setup", "restore", "data", "compile", "step", "eval", "checkpoint")


class Goodput:
  """Seconds per part since construction; `measure(part)` around each piece of work."""

  def __init__(self):
    self.start = time.perf_counter()
    self.seconds = dict.fromkeys(PARTS, 0.0)
    self._window = dict(self.seconds)
    self._window_start = self.start

  @contextlib.contextmanager
  def measure(self, part: str):
    t0 = time.perf_counter()
    try:
      yield
    finally:
      self.seconds[part] += time.perf_counter() - t0

  def setup_done(self) -> None:
    """Everything since construction not yet measured was set-up; call once, before the loop."""
    self.seconds["setup"] = time.perf_counter() - self.start - sum(self.seconds.values())
    self.new_window()

  def new_window(self) -> None:
    """Starts a log window (after the first step's compile, and at each log)."""
    self._window, self._window_start = dict(self.seconds), time.perf_counter()

  def window(self, steps: int) -> dict:
    """Per-step times of the log window since `new_window`, evaluations and checkpoint saves left out."""
    delta = {k: v - self._window[k] for k, v in self.seconds.items()}
    wall = time.perf_counter() - self._window_start - delta["eval"] - delta["checkpoint"] - delta["restore"]
    steps = max(steps, 1)
    self.new_window()
    return {"step_time": wall / steps, "data_wait_s": delta["data"] / steps,
            "device_step_s": delta["step"] / steps, "data_wait_frac": delta["data"] / max(wall, 1e-9)}

  def summary(self) -> dict:
    """Seconds per part, `other`, `wall` and `goodput` (step / wall) so far."""
    wall = time.perf_counter() - self.start
    out = {f"{k}_s": v for k, v in self.seconds.items()}
    out.update(other_s=wall - sum(self.seconds.values()), wall_s=wall, goodput=self.seconds["step"] / max(wall, 1e-9))
    return out


def summary_line(s: dict) -> str:
  """`goodput: 93% of wall time in training steps (...)` from `Goodput.summary()`."""
  parts = ", ".join(f"{k[:-2].replace('_', ' ')} {100 * s[k] / max(s['wall_s'], 1e-9):.1f}%"
                    for k in (*(f"{p}_s" for p in PARTS if p != "step"), "other_s"))
  return f"goodput: {100 * s['goodput']:.0f}% of wall time in training steps ({parts}; wall {s['wall_s']:.1f} s)"
