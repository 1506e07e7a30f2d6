"""Per-position next-byte NLL of a restored model: one jitted forward, compiled once per (B, L, train)."""
# pylint: disable=invalid-name
import functools
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from hnet import sharding
from hnet.evals import packing
from hnet.train import trainer
from hnet.train.eval_totals import accumulate
from hnet.train.runs import Loaded


def _score(params, batch: dict, *, graphdef, train: bool, greedy: bool):
  """Shardings follow the inputs (params placed by loading, batch by to_global): one compile per shape.

  Returns the masked NLL, the model's metrics and, with `greedy`, per position whether the target is
  the argmax byte (lm-eval's `is_greedy`; else None, so bits/byte pays for no argmax).
  """
  logits_BLV, nll_BL, aux = trainer.forward_nll(params, graphdef, batch, train=train)
  greedy_BL = jnp.argmax(logits_BLV, axis=-1) == batch["targets"] if greedy else None
  return nll_BL, aux["metrics"], greedy_BL


@functools.lru_cache(maxsize=16)
def _jitted_score(graphdef, train: bool, greedy: bool):
  # The graphdef is hashed here once per scorer, not on every batch as a static argument would be
  # (hashing an NNX graphdef costs ~2 ms: a quarter of a small model's eval step on CPU).
  return jax.jit(functools.partial(_score, graphdef=graphdef, train=train, greedy=greedy))


class Scorer:
  """`scorer(batch_np) -> (masked nll_BL in nats, metrics)`, numpy in and out; `score` adds greediness."""

  def __init__(self, loaded: Loaded, *, train: bool = False):
    self.loaded = loaded
    self.train = train
    # Both settings looked up once here (jit compiles on first call only): not a graphdef hash per batch.
    self._score = {greedy: _jitted_score(loaded.graphdef, train, greedy) for greedy in (False, True)}

  def __call__(self, batch: dict) -> tuple[np.ndarray, dict]:
    nll_BL, metrics, _ = self.score(batch)
    return nll_BL, metrics

  def score(self, batch: dict, greedy: bool = False) -> tuple[np.ndarray, dict, np.ndarray | None]:
    """(masked nll_BL, metrics, greedy_BL): with `greedy`, greedy_BL is True where the target is the
    argmax byte; else None (each setting compiles when first asked for)."""
    with jax.set_mesh(self.loaded.mesh):
      batch_BL = sharding.to_global(batch, self.loaded.batch_sharding)
      nll_BL, metrics, greedy_BL = self._score[greedy](self.loaded.params, batch_BL)
    nll_BL, metrics, greedy_BL = jax.device_get((nll_BL, metrics, greedy_BL))
    return (np.asarray(nll_BL), {k: float(v) for k, v in metrics.items()},
            None if greedy_BL is None else np.asarray(greedy_BL))


def run(scorer: Scorer, batches: Iterable[dict], max_batches: int = -1) -> dict:
  """Exact bits/byte over `batches` (or the first `max_batches`), with per-stage compression."""
  def score(batch: dict) -> tuple:
    nll_BL, metrics = scorer(batch)  # summed on the host in float64 (the trainer sums on device)
    return (nll_BL.sum(dtype=np.float64), batch["loss_mask"].sum(dtype=np.float64),
            (batch["segment_ids"] > 0).sum(), metrics)

  result = accumulate(batches, score, scorer.loaded.model_cfg.num_stages, max_batches).result()
  del result["metrics"]
  return result


def segment_nll(scorer: Scorer, packed: packing.Packed, batch_size: int, progress: str | None = None
                ) -> np.ndarray:
  """Total NLL (nats) of each packed segment's counted targets. `progress`: a progress bar's label."""
  return _segment_totals(scorer, packed, batch_size, greedy=False, progress=progress)[0]


def segment_nll_and_greedy(scorer: Scorer, packed: packing.Packed, batch_size: int, progress: str | None = None
                           ) -> tuple[np.ndarray, np.ndarray]:
  """Per packed segment: total NLL (nats) of its counted targets, and whether each is the argmax byte."""
  nll, missed = _segment_totals(scorer, packed, batch_size, greedy=True, progress=progress)
  return nll, missed == 0


def _segment_totals(scorer, packed, batch_size, *, greedy, progress):
  """Per segment, summed NLL and (with `greedy`) the count of counted targets that are not the argmax."""
  nll, missed = [], []
  batches = packing.batches(packed, batch_size)
  if progress:
    batches = tqdm(batches, total=-(-len(packed.tokens_KR) // batch_size), desc=progress, unit="batch")
  for batch in batches:
    nll_BL, _, greedy_BL = scorer.score(batch, greedy)
    nll.append(nll_BL)
    if greedy:
      missed.append((~greedy_BL) * batch["loss_mask"])
  K, L = len(packed.tokens_KR), packed.tokens_KR.shape[1] - 1
  stack = lambda parts: np.concatenate(parts)[:K] if parts else np.zeros((0, L))  # noqa: E731
  return (packing.segment_sums(packed, stack(nll)),
          packing.segment_sums(packed, stack(missed)) if greedy else None)
