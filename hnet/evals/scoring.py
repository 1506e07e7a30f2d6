"""Per-position next-byte NLL of a restored model: one jitted forward, compiled once per (B, L, train)."""
# pylint: disable=invalid-name
import functools
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from hnet import trainer
from hnet.evals import packing
from hnet.runs import Loaded
from hnet.metrics import EvalTotals


def _score(params, batch: dict, *, graphdef, train: bool):
  """Shardings follow the inputs (params placed by loading, batch by to_global): one compile per shape.

  Returns the masked NLL, the model's metrics and, per position, whether the target is the argmax
  byte (lm-eval's `is_greedy`).
  """
  model = nnx.merge(graphdef, params)
  logits_BLV, aux = model(batch["inputs"], batch["segment_ids"], train=train)
  nll_BL = optax.softmax_cross_entropy_with_integer_labels(logits_BLV, batch["targets"])
  greedy_BL = jnp.argmax(logits_BLV, axis=-1) == batch["targets"]
  return nll_BL * batch["loss_mask"], aux["metrics"], greedy_BL


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
    nll_BL, metrics, _ = self.with_greedy(batch)
    return nll_BL, metrics

  def with_greedy(self, batch: dict) -> tuple[np.ndarray, dict, np.ndarray]:
    """(masked nll_BL, metrics, greedy_BL): greedy_BL is True where the target is the argmax byte."""
    with jax.set_mesh(self.loaded.mesh):
      batch_BL = trainer.to_global(batch, self.loaded.batch_sharding)
      nll_BL, metrics, greedy_BL = self._score(self.loaded.params, batch_BL)
    nll_BL, metrics, greedy_BL = jax.device_get((nll_BL, metrics, greedy_BL))
    return np.asarray(nll_BL), {k: float(v) for k, v in metrics.items()}, np.asarray(greedy_BL)


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
  return segment_nll_and_greedy(scorer, packed, batch_size)[0]


def segment_nll_and_greedy(scorer: Scorer, packed: packing.Packed, batch_size: int, progress: str | None = None
                           ) -> tuple[np.ndarray, np.ndarray]:
  """Per packed segment: total NLL (nats) of its counted targets, and whether each is the argmax byte.
  `progress`: a progress bar's label (none without)."""
  nll, missed = [], []
  batches = packing.batches(packed, batch_size)
  if progress:
    batches = tqdm(batches, total=-(-len(packed.tokens_KR) // batch_size), desc=progress, unit="batch")
  for batch in batches:
    nll_BL, _, greedy_BL = scorer.with_greedy(batch)
    nll.append(nll_BL)
    missed.append((~greedy_BL) * batch["loss_mask"])  # counted targets that are not the argmax
  K, L = len(packed.tokens_KR), packed.tokens_KR.shape[1] - 1
  stack = lambda parts: np.concatenate(parts)[:K] if parts else np.zeros((0, L))  # noqa: E731
  return (packing.segment_sums(packed, stack(nll)),
          packing.segment_sums(packed, stack(missed)) == 0)
