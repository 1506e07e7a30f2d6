"""Per-position next-byte NLL of a restored model: one jitted forward, compiled once per (B, L, train)."""
# pylint: disable=invalid-name
import functools
from typing import Iterable

import jax
import numpy as np
import optax
from flax import nnx

from hnet import trainer
from hnet.evals import packing
from hnet.evals.loading import Loaded
from hnet.metrics import EvalTotals


def _score(params, batch: dict, *, graphdef, train: bool):
  """Shardings follow the inputs (params placed by loading, batch by to_global): one compile per shape."""
  model = nnx.merge(graphdef, params)
  logits_BLV, aux = model(batch["inputs"], batch["segment_ids"], train=train)
  nll_BL = optax.softmax_cross_entropy_with_integer_labels(logits_BLV, batch["targets"])
  return nll_BL * batch["loss_mask"], aux["metrics"]


@functools.lru_cache(maxsize=8)
def _jitted_score(graphdef, train: bool):
  # The graphdef is hashed here once per scorer, not on every batch as a static argument would be
  # (hashing an NNX graphdef costs ~2 ms: a quarter of a small model's eval step on CPU).
  return jax.jit(functools.partial(_score, graphdef=graphdef, train=train))


class Scorer:
  """`scorer(batch_np) -> (masked nll_BL in nats, metrics)`, numpy in and out."""

  def __init__(self, loaded: Loaded, *, train: bool = False):
    self.loaded = loaded
    self.train = train
    self._score = _jitted_score(loaded.graphdef, train)

  def __call__(self, batch: dict) -> tuple[np.ndarray, dict]:
    with jax.set_mesh(self.loaded.mesh):
      batch_BL = trainer.to_global(batch, self.loaded.batch_sharding)
      nll_BL, metrics = self._score(self.loaded.params, batch_BL)
    nll_BL, metrics = jax.device_get((nll_BL, metrics))
    return np.asarray(nll_BL), {k: float(v) for k, v in metrics.items()}


def run(scorer: Scorer, batches: Iterable[dict], max_batches: int = -1) -> dict:
  """Exact bits/byte over `batches` (or the first `max_batches`), with per-stage compression."""
  totals = EvalTotals(scorer.loaded.model_cfg.num_stages)
  for i, batch in enumerate(batches):
    if 0 <= max_batches <= i:
      break
    nll_BL, metrics = scorer(batch)
    totals.add(nll_BL.sum(dtype=np.float64), batch["loss_mask"].sum(dtype=np.float64),
               (batch["segment_ids"] > 0).sum(), metrics)
  result = totals.result()
  del result["metrics"]
  return result


def segment_nll(scorer: Scorer, packed: packing.Packed, batch_size: int) -> np.ndarray:
  """Total NLL (nats) of each packed segment's counted targets."""
  out = []
  for batch in packing.batches(packed, batch_size):
    out.append(scorer(batch)[0])
  nll_KL = np.concatenate(out)[:len(packed.tokens_KR)] if out else np.zeros((0, packed.tokens_KR.shape[1] - 1))
  return packing.segment_sums(packed, nll_KL)
