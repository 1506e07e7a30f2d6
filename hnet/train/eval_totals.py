"""Evaluation totals: exact bits/byte and per-stage compression summed over batches, and the one eval loop.

The trainer's periodic evals and eval.py's bits/byte both fill an `EvalTotals` through `accumulate`.
"""
from typing import Callable, Iterable

from hnet.model.loss import LN2


class EvalTotals:
  """Exact bits/byte and per-stage compression summed over batches: the one accumulator of every evaluation.

  `add` takes a batch's NLL sum (nats), its target and position counts, and the model's metrics
  (`stage{s}/boundary_frac` is over stage s's positions, the chunks of stage s - 1, so chunk counts
  compose across stages); other metrics are averaged over batches.
  """

  def __init__(self, num_stages: int):
    self.nll = 0.0
    self.targets = 0.0
    self.positions = 0.0
    self.chunks = [0.0] * (num_stages - 1)
    self.metric_sums: dict[str, float] = {}
    self.batches = 0

  def add(self, nll_nats: float, targets: float, positions: float, metrics: dict) -> None:
    self.nll += float(nll_nats)
    self.targets += float(targets)
    self.positions += float(positions)
    n = float(positions)
    for s in range(len(self.chunks)):
      n *= float(metrics.get(f"stage{s}/boundary_frac", 1.0))
      self.chunks[s] += n
    for k, v in metrics.items():
      self.metric_sums[k] = self.metric_sums.get(k, 0.0) + float(v)
    self.batches += 1

  def result(self) -> dict:
    """bits_per_byte, target_bytes, nll_nats, per-stage compression and the batch means of the metrics."""
    if self.targets == 0:
      raise ValueError("the evaluation saw no target bytes: is the split / file empty?")
    means = {k: v / self.batches for k, v in self.metric_sums.items()}
    stages = [{"stage": s, "bytes_per_chunk": self.positions / max(c, 1e-9),
               "boundary_frac": c / max(self.chunks[s - 1] if s else self.positions, 1e-9),
               "overflow_frac": means.get(f"stage{s}/overflow_frac", 0.0),
               "row_overflow_frac": means.get(f"stage{s}/row_overflow_frac", 0.0)}
              for s, c in enumerate(self.chunks)]
    return {"bits_per_byte": self.nll / self.targets / LN2, "target_bytes": int(round(self.targets)),
            "nll_nats": self.nll, "stages": stages, "metrics": means}

  def scalars(self) -> dict[str, float]:
    """`result()` flattened for a metric writer: bits/byte, targets, bytes per chunk and metric means."""
    r = self.result()
    return {"bits_per_byte": r["bits_per_byte"], "target_bytes": float(r["target_bytes"]),
            **{f"stage{st['stage']}/bytes_per_chunk": st["bytes_per_chunk"] for st in r["stages"]},
            **r["metrics"]}


def accumulate(batches: Iterable[dict], score: Callable[[dict], tuple], num_stages: int, max_batches: int = -1
               ) -> EvalTotals:
  """The one evaluation loop: `score(batch)` -> (NLL nats, targets, positions, metrics) summed over `batches`
  (or their first `max_batches`)."""
  totals = EvalTotals(num_stages)
  for i, batch in enumerate(batches):
    if 0 <= max_batches <= i:
      break
    totals.add(*score(batch))
  return totals
