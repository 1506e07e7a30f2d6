"""Frozen model configuration and the one function that builds it from a ConfigDict.

Layout grammar (H-Net's `arch_layout`): a stage is `[encoder, inner, decoder]` with
`inner` another stage, or `[main]` for the innermost stage. Each string concatenates
`<letter><count>` tokens: `m` Mamba2, `M` Mamba2+MLP, `t` attention, `T` attention+MLP.
"""
from __future__ import annotations

import ast
import dataclasses
import fractions
import json
import os
import re
from typing import Any, Sequence

import jax.numpy as jnp

from hnet import storage
from hnet.configs import stored as stored_config

SWIGLU_MULTIPLE = 128  # SwiGLU hidden widths round up to this (as the H-Net code does)
ENTROPY_RULES = ("global", "monotonic")
ATTENTION_IMPLS = ("auto", "splash", "default", "cudnn", "xla")  # hnet/layers/attention.py
LAYER_LETTERS = "mMtT"
_TOKEN_RE = re.compile(r"([mMtT])(\d+)")


@dataclasses.dataclass(frozen=True)
class LayerGroup:
  """`count` consecutive layers of one kind, run as one scanned stack."""
  kind: str  # one of 'm', 'M', 't', 'T'
  count: int

  @property
  def mixer(self) -> str:
    return "mamba" if self.kind in "mM" else "attention"

  @property
  def has_mlp(self) -> bool:
    return self.kind in "MT"

  @property
  def height(self) -> int:
    """H-Net init-scaling height: 1 per mixer, +1 per MLP."""
    return self.count * (2 if self.has_mlp else 1)


def parse_layer_string(spec: str) -> tuple[LayerGroup, ...]:
  """'T1m4' -> (LayerGroup('T', 1), LayerGroup('m', 4))."""
  if not isinstance(spec, str) or not spec:
    raise ValueError(f"layout: expected a non-empty layer string like 'm4' or 'T1m4', got {spec!r}")
  tokens = _TOKEN_RE.findall(spec)
  if "".join(k + n for k, n in tokens) != spec:
    raise ValueError(f"layout: malformed layer string {spec!r}: use <letter><count> tokens with letters "
                     f"in {LAYER_LETTERS!r}, e.g. 'm4' or 'T1m4'")
  groups: list[LayerGroup] = []
  for kind, count in tokens:
    if int(count) <= 0:
      raise ValueError(f"layout: layer count must be positive in {spec!r}")
    if groups and groups[-1].kind == kind:  # 'm2m2' == 'm4'
      groups[-1] = LayerGroup(kind, groups[-1].count + int(count))
    else:
      groups.append(LayerGroup(kind, int(count)))
  return tuple(groups)


def parse_layout(layout: str | Sequence[Any]) -> list[tuple[LayerGroup, ...]]:
  """Flattens a nested layout into [enc_0, enc_1, ..., main, ..., dec_1, dec_0] order.

  Returns a list with 2*S-1 entries for S stages: encoders outer->inner, the main
  network, decoders inner->outer.
  """
  if isinstance(layout, str):
    try:
      layout = ast.literal_eval(layout)
    except (ValueError, SyntaxError) as e:
      raise ValueError(f"layout: cannot parse {layout!r} as a nested list such as "
                       "\"['m4', ['T22'], 'm4']\"") from e
  encoders, decoders = [], []
  node = layout
  while True:
    if not isinstance(node, (list, tuple)):
      raise ValueError(f"layout: expected a list at each stage, got {node!r}")
    if len(node) == 1:
      main = parse_layer_string(node[0])
      break
    if len(node) != 3:
      raise ValueError(f"layout: a stage is [encoder, inner, decoder] or [main], got {len(node)} "
                       f"entries in {node!r}")
    encoders.append(parse_layer_string(node[0]))
    decoders.append(parse_layer_string(node[2]))
    node = node[1]
  return encoders + [main] + decoders[::-1]


@dataclasses.dataclass(frozen=True)
class StageConfig:
  """One stage's widths and layers. The innermost stage has only `main`."""
  index: int
  d_model: int
  d_ff: int
  num_heads: int
  rotary_dim: int
  window: int
  encoder: tuple[LayerGroup, ...] = ()
  main: tuple[LayerGroup, ...] = ()
  decoder: tuple[LayerGroup, ...] = ()
  target_ratio: float = 1.0  # N: bytes (or outer chunks) per chunk; outer stages only

  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads

  @property
  def is_innermost(self) -> bool:
    return bool(self.main)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The whole byte LM: stages outer -> inner plus settings shared by all stages."""
  stages: tuple[StageConfig, ...]
  router: str = "cosine"
  capacity_slack: float = 1.5
  capacity_multiple: int = 8
  delete_gate_scale: float = -30.0
  ssm_d_state: int = 128
  ssm_expand: int = 2
  ssm_head_dim: int = 64
  ssm_d_conv: int = 4
  ssm_chunk_size: int = 256
  ssd_impl: str = "xla"
  attention_impl: str = "auto"
  softmax1: bool = False  # attention may attend to nothing (a null key: score 0, value 0), as MrT5
  dtype: str = "float32"
  remat: str = "full"
  scan_layers: bool = True  # False: layer groups unrolled (a loop-free program for XLA's cost estimate)
  init_std: float = 0.02
  vocab_size: int = 256
  entropy_lm: "ModelConfig | None" = None  # router='entropy': the frozen byte LM (from model.entropy_model)
  entropy_model: str = ""  # its train.py work dir (weights are loaded from there at step 0)
  entropy_threshold: float = 0.0  # θ in nats (global rule) or of the entropy rise (monotonic rule)
  entropy_rule: str = "global"

  def __post_init__(self):
    # Which routers exist and what each needs is the model layer's registry (hnet/model/routers, `check`).
    if not self.router:
      raise ValueError("model.router is empty: name a router, or 'none' for a flat model")
    if len(self.stages) == 1 and self.router != "none":
      raise ValueError(f"model.router={self.router!r} needs a hierarchical layout such as "
                       "\"['m2', ['T4'], 'm2']\"; a flat layout like \"['T4']\" uses router='none'")
    if len(self.stages) > 1 and self.router == "none":
      raise ValueError("model.router='none' is the flat baseline: give a one-stage layout such as \"['T4']\"")
    if self.entropy_rule not in ENTROPY_RULES:
      raise ValueError(f"model.entropy_rule={self.entropy_rule!r}: use one of {ENTROPY_RULES}")
    if self.entropy_lm is not None and self.entropy_lm.vocab_size != self.vocab_size:
      raise ValueError(f"model.entropy_model={self.entropy_model!r} has vocab_size {self.entropy_lm.vocab_size}, "
                       f"this model {self.vocab_size}")
    for s, st in enumerate(self.stages):
      if st.d_model % st.num_heads:
        raise ValueError(f"model.d_model[{s}]={st.d_model} is not divisible by num_heads[{s}]={st.num_heads}")
      if st.rotary_dim % 2 or st.rotary_dim > st.head_dim:
        raise ValueError(f"model.rotary_dim[{s}]={st.rotary_dim} must be even and <= head dim {st.head_dim}")
      if s and st.d_model < self.stages[s - 1].d_model:
        raise ValueError(f"model.d_model must not shrink inward: stage {s} has {st.d_model} < "
                         f"{self.stages[s - 1].d_model}")
      if not st.is_innermost and st.target_ratio <= 1.0:
        raise ValueError(f"model.target_ratio[{s}]={st.target_ratio} must be > 1 (bytes per chunk)")
      layers = st.encoder + st.main + st.decoder
      if any(g.has_mlp for g in layers) and st.d_ff <= 0:
        raise ValueError(f"model.d_ff[{s}] must be > 0: stage {s} has layers with an MLP ('M'/'T')")
      if any(g.mixer == "mamba" for g in layers) and (self.ssm_expand * st.d_model) % self.ssm_head_dim:
        raise ValueError(f"model.ssm_head_dim={self.ssm_head_dim} must divide ssm_expand*d_model[{s}]="
                         f"{self.ssm_expand * st.d_model}")
    if self.capacity_slack < 1.0:
      raise ValueError(f"model.capacity_slack={self.capacity_slack} must be >= 1")
    if self.dtype not in ("float32", "bfloat16", "float16"):
      raise ValueError(f"model.dtype={self.dtype!r}: use 'float32' or 'bfloat16'")
    if self.ssd_impl not in ("xla", "pallas"):
      raise ValueError(f"model.ssd_impl={self.ssd_impl!r}: use 'xla' or 'pallas'")
    for key in ("ssm_chunk_size", "ssm_head_dim", "ssm_d_state") if self.ssd_impl == "pallas" else ():
      v = getattr(self, key)  # the kernels' tile sides
      if v < 16 or v & (v - 1):
        raise ValueError(f"model.{key}={v} must be a power of two >= 16 with model.ssd_impl='pallas'")
    if self.attention_impl not in ATTENTION_IMPLS:
      raise ValueError(f"model.attention_impl={self.attention_impl!r}: use one of {ATTENTION_IMPLS}")

  @property
  def num_stages(self) -> int:
    return len(self.stages)

  def n_res(self, stage: int, innermost_main: bool = False) -> int:
    """H-Net's cumulative height for output-projection init scaling."""
    h = sum(sum(g.height for g in st.encoder + st.decoder) for st in self.stages[: stage + 1])
    if innermost_main:
      h += sum(g.height for g in self.stages[stage].main)
    return max(h, 1)

  def budget_ratio(self, stage: int) -> fractions.Fraction:
    """Chunk slots per position at `stage`: slack / N as an exact fraction (same integers in numpy and JAX)."""
    return (fractions.Fraction(self.capacity_slack).limit_denominator(1000)
            / fractions.Fraction(self.stages[stage].target_ratio).limit_denominator(1000))

  def chunk_budget(self, stage: int, length):
    """Chunk slots of one document of `length` positions: min(length, ceil(length · slack / N)).

    Works on Python ints and integer arrays alike. Each packed document gets its own budget, so its
    chunking never depends on the other documents of its row (hnet/model/chunking.py).
    """
    r = self.budget_ratio(stage)
    slots = -(-(length * r.numerator) // r.denominator)
    return min(length, slots) if isinstance(length, int) else jnp.minimum(length, slots)

  def capacity(self, stage: int, length: int) -> int:
    """Static chunk capacity of stage `stage` for a row of `length` positions: a one-document budget, rounded up."""
    m = self.chunk_budget(stage, length)
    m = -(-m // self.capacity_multiple) * self.capacity_multiple
    return max(1, min(m, length))

  def document_budgets(self, length: int) -> list[int]:
    """Chunk budget at every outer stage for one document of `length` bytes (generation's limits)."""
    budgets = []
    for s in range(self.num_stages - 1):
      length = self.chunk_budget(s, length)
      budgets.append(length)
    return budgets


def _per_stage(value, n: int, key: str, cast=int) -> tuple:
  values = tuple(value) if isinstance(value, (list, tuple)) else (value,) * n
  if len(values) != n:
    raise ValueError(f"model.{key} has {len(values)} entries but the layout has {n} stage(s)")
  return tuple(cast(v) for v in values)


def entropy_lm_config(workdir: str) -> ModelConfig:
  """The model config of a byte LM's train.py work dir (`config.json`), for the entropy router."""
  path = os.path.join(workdir if storage.is_remote(workdir) else os.path.expanduser(workdir), "config.json")
  if not storage.path(path).is_file():
    raise FileNotFoundError(f"model.entropy_model={workdir!r}: no train.py work dir there ({path} does not "
                            "exist); train one: python train.py --config configs/entropy_lm.py --workdir "
                            f"{workdir}")
  try:
    with storage.open_file(path) as f:
      run_config = json.load(f)
    # Keys added to the config since that run take their defaults, as when eval.py loads it.
    lm = model_config_from_dict(stored_config.merge_config(run_config, None, stored_config.default_config()).model)
  except (KeyError, TypeError, ValueError) as e:
    raise ValueError(f"model.entropy_model={workdir!r}: incompatible config in {path} "
                     f"({type(e).__name__}: {e})") from None
  if lm.router != "none":
    raise ValueError(f"model.entropy_model={workdir!r} is not a flat byte LM (its router is {lm.router!r}): "
                     "train one with configs/entropy_lm.py")
  return lm


def round_up(x: int, multiple: int) -> int:
  return -(-x // multiple) * multiple


def model_config_from_dict(c) -> ModelConfig:
  """Builds and validates a ModelConfig from the `model` ConfigDict (or a dict)."""
  get = c.__getitem__
  groups = parse_layout(get("layout"))
  num_stages = (len(groups) + 1) // 2
  d_model = _per_stage(get("d_model"), num_stages, "d_model")
  d_ff = _per_stage(get("d_ff"), num_stages, "d_ff")
  num_heads = _per_stage(get("num_heads"), num_stages, "num_heads")
  rotary = _per_stage(get("rotary_dim"), num_stages, "rotary_dim")
  window = _per_stage(get("window"), num_stages, "window")
  ratios = _per_stage(get("target_ratio"), num_stages - 1, "target_ratio", float) if num_stages > 1 else ()
  stages = []
  for s in range(num_stages):
    head_dim = d_model[s] // max(num_heads[s], 1)
    innermost = s == num_stages - 1
    stages.append(StageConfig(
        index=s,
        d_model=d_model[s],
        d_ff=round_up(d_ff[s], SWIGLU_MULTIPLE) if d_ff[s] > 0 else 0,
        num_heads=num_heads[s],
        rotary_dim=(head_dim // 2 // 2 * 2) if rotary[s] < 0 else rotary[s],
        window=window[s],
        encoder=() if innermost else groups[s],
        main=groups[s] if innermost else (),
        decoder=() if innermost else groups[len(groups) - 1 - s],
        target_ratio=1.0 if innermost else ratios[s],
    ))
  entropy = {}
  if get("router") == "entropy":
    workdir = c["entropy_model"] or ""
    entropy = dict(entropy_lm=entropy_lm_config(workdir) if workdir else None, entropy_model=workdir,
                   entropy_threshold=float(get("entropy_threshold")), entropy_rule=get("entropy_rule"))
  return ModelConfig(
      stages=tuple(stages),
      router=get("router"),
      **entropy,
      capacity_slack=float(get("capacity_slack")),
      capacity_multiple=int(get("capacity_multiple")),
      delete_gate_scale=float(get("delete_gate_scale")),
      ssm_d_state=int(get("ssm_d_state")),
      ssm_expand=int(get("ssm_expand")),
      ssm_head_dim=int(get("ssm_head_dim")),
      ssm_d_conv=int(get("ssm_d_conv")),
      ssm_chunk_size=int(get("ssm_chunk_size")),
      ssd_impl=get("ssd_impl"),
      attention_impl=get("attention_impl"),
      softmax1=bool(get("softmax1")) if "softmax1" in c else False,  # runs written before the key: off
      dtype=get("dtype"),
      remat=get("remat"),
      scan_layers=bool(get("scan_layers")),
      init_std=float(get("init_std")),
  )
