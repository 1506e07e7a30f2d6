"""hnet checkpoints as an lm-evaluation-harness model: `--model hnet --model_args workdir=runs/x`.

Byte-level: the "tokenizer" is UTF-8, so a continuation's log-likelihood is the sum over its bytes,
and lm-eval's `acc_norm` (per character) and `acc_bytes` (per byte) normalise the same sums.

- `loglikelihood`: every (context, continuation) as BOS + context + continuation, the context cut
  from the left to fit `data.seq_len`, packed several to a row and scored in batches of a fixed shape
  by the same scorer as `eval.py mc` (`hnet.evals.mc.loglik_fn`): one compile for the whole task.
  `is_greedy` is whether every continuation byte is the model's argmax.
- `loglikelihood_rolling`: a whole text as BOS + bytes in pieces of `data.seq_len` (as `eval.py bpb`
  reads a text file); the end-of-document byte is scored only with `score_eos=True`, which makes the
  sum equal to `eval.py bpb`'s (the harness's perplexity tasks count the text's own bytes).
- `generate_until`: the cached batched sampler (`hnet.model.generate`), greedy unless `do_sample`, cut at
  the first stop sequence, at most `max_gen_toks` bytes.

Any other `--model_args` key with a dot is a config override of the stored run
(`eval.batch_size=32`, as `eval.py --config.eval.batch_size=32`).
"""
import collections
import logging
from typing import Any

import numpy as np
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from tqdm.auto import tqdm

from hnet.evals import mc, packing, sampling, scoring
from hnet.train import runs

log = logging.getLogger(__name__)
DEFAULT_MAX_GEN_BYTES = 256


@register_model("hnet")
class HNetEvalLM(LM):
  """lm-eval's `LM` over a restored hnet run (`hnet.train.runs.load`)."""

  def __init__(self, workdir: str | None = None, checkpoint: str | None = None, step: int | None = None,
               batch_size: int | str | None = None, score_eos: bool = False, seed: int = 0,
               max_gen_bytes: int = DEFAULT_MAX_GEN_BYTES, max_batch_size: Any = None, device: Any = None,
               **overrides):
    super().__init__()
    del max_batch_size, device  # lm-eval passes these to every model; jax places the model itself
    unknown = [k for k in overrides if "." not in k]
    if unknown:
      raise ValueError(f"--model_args: unknown key(s) {unknown} for the hnet model; use workdir, checkpoint, step, "
                       f"batch_size, score_eos, seed, max_gen_bytes, or a config override such as eval.batch_size=8")
    if workdir is None and checkpoint is None:
      raise ValueError("--model_args needs workdir=<train.py work dir> or checkpoint=<dir>")
    if batch_size not in (None, "auto") and not str(batch_size).startswith("auto"):
      overrides["eval.batch_size"] = int(batch_size)
    self.loaded = runs.load(workdir, checkpoint=checkpoint, step=None if step is None else int(step),
                               overrides=overrides)
    self.score_eos = bool(score_eos)
    self.seed = int(seed)
    self.max_gen_bytes = int(max_gen_bytes)
    self._loglik = mc.loglik_fn(self.loaded, with_greedy=True, progress="loglikelihood")

  # --------------------------------------------------------------------------- scoring

  def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
    contexts = [r.args[0].encode("utf-8") for r in requests]
    continuations = [r.args[1].encode("utf-8") for r in requests]
    if not requests:
      return []
    ll, greedy = self._loglik(contexts, continuations)
    return [(float(a), bool(g)) for a, g in zip(ll, greedy)]

  def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
    c = self.loaded.config
    segments, owner = [], []
    for i, r in enumerate(requests):
      pieces = packing.document_segments([r.args[0]], c.data.seq_len, c.data.invalid_utf8)
      if not self.score_eos:
        pieces[-1][1][-1] = 0.0  # the last target of the last piece is the end-of-document byte
      segments += pieces
      owner += [i] * len(pieces)
    if not segments:
      return []
    nll = scoring.segment_nll(scoring.Scorer(self.loaded), packing.pack(segments, c.data.seq_len),
                              self.loaded.batch_size(c.eval.batch_size))
    totals = np.zeros(len(requests))
    np.add.at(totals, np.asarray(owner), nll)
    return [float(-t) for t in totals]

  # --------------------------------------------------------------------------- generation

  def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
    out: list[str | None] = [None] * len(requests)
    groups = collections.defaultdict(list)  # one sampler setting per group: requests batch together
    for i, r in enumerate(requests):
      context, kwargs = r.args
      settings = generation_settings(kwargs, self.max_gen_bytes)
      groups[settings].append((i, context))
    B = self.loaded.batch_size(self.loaded.config.eval.batch_size)
    bar = tqdm(total=len(requests), desc="generate_until", disable=disable_tqdm)
    for (until, max_bytes, temperature, top_k, top_p), items in groups.items():
      for a in range(0, len(items), B):
        chunk = items[a:a + B]
        result = sampling.run(self.loaded, [ctx.encode("utf-8") for _, ctx in chunk], max_bytes=max_bytes,
                              temperature=temperature, top_k=top_k, top_p=top_p, seed=self.seed, raw=True)
        for (i, _), data in zip(chunk, result["raw_outputs"]):
          out[i] = cut_at_stops(data, until)
        bar.update(len(chunk))
    bar.close()
    return out


def generation_settings(kwargs: dict, default_max_bytes: int) -> tuple:
  """(stop sequences, max bytes, temperature, top_k, top_p) from lm-eval's `gen_kwargs`; greedy unless do_sample."""
  kwargs = dict(kwargs or {})
  until = kwargs.pop("until", None) or []
  until = tuple([until] if isinstance(until, str) else until)
  max_bytes = int(kwargs.pop("max_gen_toks", default_max_bytes))
  do_sample = bool(kwargs.pop("do_sample", False))
  temperature = float(kwargs.pop("temperature", 1.0 if do_sample else 0.0))
  if not do_sample:
    temperature = 0.0
  top_k, top_p = int(kwargs.pop("top_k", 0) or 0), float(kwargs.pop("top_p", 1.0) or 1.0)
  if temperature < 0 or max_bytes < 1:
    raise ValueError(f"gen_kwargs: temperature must be >= 0 and max_gen_toks >= 1, got {temperature}, {max_bytes}")
  for ignored in kwargs:
    log.warning("generate_until: gen_kwargs key %r is not used by the hnet model", ignored)
  return until, max_bytes, temperature, top_k, top_p


def cut_at_stops(data: bytes, until: tuple[str, ...]) -> str:
  """The generated text up to the first of the stop sequences, decoded as UTF-8 (invalid bytes dropped)."""
  end = len(data)
  for stop in until:
    k = data.find(stop.encode("utf-8"))
    if 0 <= k < end:
      end = k
  return data[:end].decode("utf-8", "ignore")
