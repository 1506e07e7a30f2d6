"""The ranges and combinations of the config keys of `base.py`: one `ValueError` naming the key.

Pure (no I/O, no jax). `check(c)` runs on every config a run is started with (train.py) or read
back with (`stored.merge_config`: eval.py, the harness), before any data is prepared or any
model is built. What a key means is in `base.py`; what it may hold is here, one rule per key.
The model's shape rules that need the parsed layout (divisibility, per-stage counts) stay in
`hnet/config.py`, the router's needs in its class.
"""
import math
from typing import Any, Callable

Rule = Callable[[Any], str | None]  # the value -> None, or what it must be

REMAT = ("none", "full", "dots", "dots_no_batch")  # hnet/model/stack.py's REMAT_POLICIES and 'none'
MC_TARGETS = ("context", "continuation", "both")


def _is_number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def at_least(lo, *, integer: bool = True, off=None, off_means: str = "") -> Rule:
  """v >= lo (an int unless integer=False); `off` (e.g. -1) is also allowed."""
  kind = "an integer" if integer else "a number"
  also = f" (or {off}: {off_means})" if off is not None else ""

  def rule(v):
    if off is not None and v == off:
      return None
    if not _is_number(v) or (integer and not isinstance(v, int)) or v < lo:
      return f"must be {kind} >= {lo}{also}"
    return None
  return rule


def above(lo) -> Rule:
  def rule(v):
    return None if _is_number(v) and v > lo else f"must be a number > {lo}"
  return rule


def below(hi) -> Rule:
  def rule(v):
    return None if _is_number(v) and v < hi else f"must be a number < {hi}"
  return rule


def between(lo, hi, *, hi_open: bool = False) -> Rule:
  right = ")" if hi_open else "]"

  def rule(v):
    ok = _is_number(v) and lo <= v and (v < hi if hi_open else v <= hi)
    return None if ok else f"must be a number in [{lo}, {hi}{right}"
  return rule


def finite(v) -> str | None:
  return None if _is_number(v) else "must be a finite number"


def start_and_count(v) -> str | None:
  """() (off), or (start step >= 1, number of steps >= 1)."""
  if v in ((), []) or (isinstance(v, (tuple, list)) and len(v) == 2 and all(
      isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v)):
    return None
  return "must be () (off) or (start step, number of steps), both integers >= 1"


def one_of(*choices) -> Rule:
  def rule(v):
    return None if v in choices else f"must be one of {choices}"
  return rule


def each(inner: Rule) -> Rule:
  """A tuple (or one value) whose every entry satisfies `inner`."""
  def rule(v):
    for i, x in enumerate(v if isinstance(v, (tuple, list)) else (v,)):
      if (why := inner(x)) is not None:
        return f"entry {i} ({x!r}) {why}"
    return None
  return rule


def subset_of(*choices) -> Rule:
  def rule(v):
    values = v if isinstance(v, (tuple, list)) else (v,)
    bad = [x for x in values if x not in choices]
    return f"has {bad!r}: each entry must be one of {choices}" if bad else None
  return rule


POSITIVE = at_least(1)
NON_NEGATIVE = at_least(0)

RULES: dict[str, Rule] = {
    "seed": NON_NEGATIVE,
    # data
    "data.validation_fraction": between(0.0, 1.0, hi_open=True),
    "data.txt_doc_bytes": at_least(0),
    "data.seq_len": at_least(2),
    "data.invalid_utf8": one_of("keep", "replace"),
    "data.packing_bins": POSITIVE,
    "data.shuffle_window_mb": at_least(0, integer=False),
    "data.worker_count": NON_NEGATIVE,
    "data.prefetch": NON_NEGATIVE,
    "data.shards": NON_NEGATIVE,
    # model (the shapes' consistency: hnet/config.py)
    "model.d_model": each(POSITIVE),
    "model.d_ff": each(NON_NEGATIVE),
    "model.num_heads": each(POSITIVE),
    "model.rotary_dim": each(at_least(0, off=-1, off_means="half the head dim")),
    "model.window": each(at_least(0, off=-1, off_means="global")),
    "model.target_ratio": each(above(1.0)),
    "model.entropy_threshold": finite,
    "model.capacity_slack": at_least(1, integer=False),
    "model.capacity_multiple": POSITIVE,
    "model.delete_gate_scale": below(0.0),
    "model.ssm_d_state": POSITIVE,
    "model.ssm_expand": POSITIVE,
    "model.ssm_head_dim": POSITIVE,
    "model.ssm_d_conv": POSITIVE,
    "model.ssm_chunk_size": POSITIVE,
    "model.remat": one_of(*REMAT),
    "model.init_std": above(0.0),
    # optimiser
    "opt.lr": above(0.0),
    "opt.schedule": one_of("wsd", "cosine"),
    "opt.warmup_steps": NON_NEGATIVE,
    "opt.decay_fraction": between(0.0, 1.0),
    "opt.min_lr_ratio": between(0.0, 1.0),
    "opt.b1": between(0.0, 1.0, hi_open=True),
    "opt.b2": between(0.0, 1.0, hi_open=True),
    "opt.eps": above(0.0),
    "opt.weight_decay": at_least(0, integer=False),
    "opt.decay_rule": one_of("default", "hnet"),
    "opt.grad_clip": finite,  # <= 0: no clipping
    "opt.lr_multipliers": each(above(0.0)),
    "opt.lr_multiplier_rule": one_of("none", "hnet"),
    "opt.lr_rule_bytes_per_token": above(0.0),
    "opt.ratio_loss_weight": at_least(0, integer=False),
    "opt.router_lr_multiplier": above(0.0),
    "opt.delete_gate_kp": at_least(0, integer=False),
    "opt.delete_gate_ki": at_least(0, integer=False),
    # training loop
    "train.batch_size": POSITIVE,
    "train.grad_accum_steps": POSITIVE,
    "train.num_steps": POSITIVE,
    "train.log_every": POSITIVE,
    "train.eval_every": POSITIVE,
    "train.eval_batches": at_least(1, off=-1, off_means="the whole split"),
    "train.max_minutes": at_least(0, integer=False, off=-1, off_means="no limit"),
    "train.profile_steps": start_and_count,
    # checkpoints
    "ckpt.every": POSITIVE,
    "ckpt.keep": POSITIVE,
    # mesh
    "mesh.data": at_least(1, off=-1, off_means="the rest of the devices"),
    "mesh.fsdp": at_least(1, off=-1, off_means="the rest of the devices"),  # one axis at most: sharding.mesh_shape
    "mesh.tensor": at_least(1, off=-1, off_means="the rest of the devices"),
    "mesh.dcn_data": POSITIVE,
    "mesh.dcn_fsdp": POSITIVE,
    # eval.py
    "eval.batch_size": POSITIVE,
    "eval.bpb_batches": at_least(1, off=-1, off_means="the whole split"),
    "eval.num_documents": at_least(1, off=-1, off_means="all"),
    "eval.num_items": POSITIVE,
    "eval.context_bytes": at_least(1, off=-1, off_means="the rest of a row"),
    "eval.continuation_bytes": POSITIVE,
    "eval.mc_choices": at_least(2),
    "eval.mc_targets": subset_of(*MC_TARGETS),
    "eval.seed": NON_NEGATIVE,
}


# Keys without a rule here: free text, booleans (ml_collections keeps their type), or checked where they are read.
NO_RULE = {
    "data.dataset": "builtin / text / a TFDS name: hnet/data/builders.py",
    "data.text_paths": "files: hnet/data/sources.py (and `combinations` below)",
    "data.text_key": "a field name: hnet/data/sources.py, pipeline.py",
    "data.data_dir": "a directory",
    "data.train_split": "a split: pipeline.prepare",
    "data.eval_split": "a split: pipeline.prepare",
    "model.layout": "hnet/config.py's grammar",
    "model.router": "the router registry (hnet/model/routers)",
    "model.entropy_model": "a work dir: hnet/config.py",
    "model.entropy_rule": "hnet/config.py",
    "model.ssd_impl": "hnet/config.py",
    "model.attention_impl": "hnet/config.py",
    "model.dtype": "hnet/config.py",
    "model.scan_layers": "a boolean",
    "model.softmax1": "a boolean",
    "opt.delete_gate_two_sided": "a boolean",
    "train.full_final_eval": "a boolean",
    "ckpt.async_save": "a boolean",
    "train.profile_all_hosts": "a boolean",
    "eval.perturbations": "names: hnet/evals/perturbations.py",
}


def _get(c, key: str):
  node = c
  for part in key.split("."):
    if part not in node:
      return _MISSING
    node = node[part]
  return node


_MISSING = object()


def combinations(c) -> str | None:
  """Keys that are fine alone but not together: the message, or None."""
  dataset, paths = _get(c, "data.dataset"), _get(c, "data.text_paths")
  if paths not in (_MISSING, None, "") and dataset != "text":
    return (f"data.text_paths={paths!r} is read only with data.dataset='text' (it is {dataset!r}): "
            "add --config.data.dataset=text")
  if dataset == "text" and paths in (None, ""):
    return "data.dataset='text' needs data.text_paths (comma-separated files, globs or directories)"
  axes = {k: _get(c, f"mesh.{k}") for k in ("data", "fsdp", "tensor")}
  if list(axes.values()).count(-1) > 1:
    rest = [k for k, v in axes.items() if v == -1]
    return (f"mesh: at most one axis may be -1 (the rest of the devices), got {', '.join(f'mesh.{k}=-1' for k in rest)}: "
            f"give the others sizes, e.g. --config.mesh.{rest[0]}=1")
  batch, accum = _get(c, "train.batch_size"), _get(c, "train.grad_accum_steps")
  if _MISSING not in (batch, accum) and batch % accum:
    return f"train.batch_size={batch} must be divisible by train.grad_accum_steps={accum}"
  return None


def check(c) -> None:
  """Raises ValueError naming the first key whose value is out of range or does not fit the others."""
  for key, rule in RULES.items():
    value = _get(c, key)
    if value is _MISSING or value is None:
      continue
    if (why := rule(value)) is not None:
      raise ValueError(f"{key}={value!r} {why}")
  if (why := combinations(c)) is not None:
    raise ValueError(why)
