"""Per-position next-byte NLL of a restored model: one jitted forward, compiled once per (B, L, train)."""
# pylint: disable=invalid-name
from typing import Iterable

import jax
import numpy as np
import optax
from flax import nnx

from hnet import trainer
from hnet.evals import packing
from hnet.evals.loading import Loaded
from hnet.loss import LN2


@jax.jit(static_argnames=("graphdef", "train"))
def _score(params, batch: dict, *, graphdef, train: bool):
  """Shardings follow the inputs (params placed by loading, batch by to_global): one compile per shape."""
  model = nnx.merge(graphdef, params)
  logits_BLV, aux = model(batch["inputs"], batch["segment_ids"], train=train)
  nll_BL = optax.softmax_cross_entropy_with_integer_labels(logits_BLV, batch["targets"])
  return nll_BL * batch["loss_mask"], aux["metrics"]


class Scorer:
  """`scorer(batch_np) -> (masked nll_BL in nats, metrics)`, numpy in and out."""

  def __init__(self, loaded: Loaded, *, train: bool = False):
    self.loaded = loaded
    self.train = train

  def __call__(self, batch: dict) -> tuple[np.ndarray, dict]:
    with jax.set_mesh(self.loaded.mesh):
      batch_BL = trainer.to_global(batch, self.loaded.batch_sharding)
      nll_BL, metrics = _score(self.loaded.params, batch_BL, graphdef=self.loaded.graphdef, train=self.train)
    nll_BL, metrics = jax.device_get((nll_BL, metrics))
    return np.asarray(nll_BL), {k: float(v) for k, v in metrics.items()}


class Totals:
  """Running bits/byte and per-stage chunk counts over batches."""

  def __init__(self, num_stages: int):
    self.nll = 0.0
    self.targets = 0.0
    self.positions = 0.0
    self.chunks = [0.0] * (num_stages - 1)
    self.overflow = [0.0] * (num_stages - 1)
    self.batches = 0

  def add(self, batch: dict, nll_BL: np.ndarray, metrics: dict) -> None:
    self.nll += float(nll_BL.sum(dtype=np.float64))
    self.targets += float(batch["loss_mask"].sum(dtype=np.float64))
    n = float((batch["segment_ids"] > 0).sum())
    self.positions += n
    # boundary_frac of stage s is over that stage's positions: the chunks of stage s - 1.
    for s in range(len(self.chunks)):
      n *= metrics.get(f"stage{s}/boundary_frac", 1.0)
      self.chunks[s] += n
      self.overflow[s] += metrics.get(f"stage{s}/overflow_frac", 0.0)
    self.batches += 1

  def result(self) -> dict:
    if self.targets == 0:
      raise ValueError("the evaluation saw no target bytes: is the split / file empty?")
    stages = [{"stage": s, "bytes_per_chunk": self.positions / max(c, 1e-9),
               "boundary_frac": c / max(self.chunks[s - 1] if s else self.positions, 1e-9),
               "overflow_frac": self.overflow[s] / max(self.batches, 1)} for s, c in enumerate(self.chunks)]
    return {"bits_per_byte": self.nll / self.targets / LN2, "target_bytes": int(round(self.targets)),
            "nll_nats": self.nll, "stages": stages}


def run(scorer: Scorer, batches: Iterable[dict], max_batches: int = -1) -> dict:
  """Exact bits/byte over `batches` (or the first `max_batches`), with per-stage compression."""
  totals = Totals(scorer.loaded.model_cfg.num_stages)
  for i, batch in enumerate(batches):
    if 0 <= max_batches <= i:
      break
    nll_BL, metrics = scorer(batch)
    totals.add(batch, nll_BL, metrics)
  return totals.result()


def segment_nll(scorer: Scorer, packed: packing.Packed, batch_size: int) -> np.ndarray:
  """Total NLL (nats) of each packed segment's counted targets."""
  out = []
  for batch in packing.batches(packed, batch_size):
    out.append(scorer(batch)[0])
  nll_KL = np.concatenate(out)[:len(packed.tokens_KR)] if out else np.zeros((0, packed.tokens_KR.shape[1] - 1))
  return packing.segment_sums(packed, nll_KL)
