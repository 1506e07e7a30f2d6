"""Convert the official H-Net PyTorch weights (goombalab/hnet) into an hnet checkpoint.

  python -m hnet.convert --pytorch hnet_2stage_XL.pt --config configs/hnet_2stage_XL.py \
      --workdir runs/hnet_2stage_XL [--official_config hnet_2stage_XL.json]

Reads a `.pt` (without torch and without running pickled code: hnet/convert/torch_files.py) or
`.safetensors` state dict, maps every official name and layout onto this model's parameters,
refuses with a one-line error naming the tensor when one is missing, extra, mis-shaped or not
finite, and writes `<workdir>/checkpoints/0` holding only the parameters plus the config. Then
`eval.py --workdir <workdir>` evaluates it and `train.py --workdir <workdir> --config ...`
fine-tunes it (fresh optimizer state, step 0). See docs/convert.md.

Official layout (PyTorch `nn.Linear` weights are (out, in); ours are (in, out) kernels):

  embeddings.weight                       -> embed/embedding
  lm_head.weight                          -> lm_head/kernel                      (transposed)
  backbone[.main_network]*s.<part>        -> backbone[/inner]*s/<part>           (stage s)
    encoder / decoder / main_network       -> encoder / decoder / main            (Isotropic -> Stack)
      layers.<i>.<block>                   -> groups/<g>/blocks/<block>[j]        (consecutive layers of one
                                                                                   kind stacked on axis 0)
      rmsnorm.weight                       -> norm/weight
    routing_module.{q,k}_proj_layer.weight -> router/w_{q,k}                     (transposed)
    residual_proj.{weight,bias}            -> residual_proj/{kernel,bias}         (weight transposed)
    pad_dimension                          -> pad_dimension
  block: norm1/norm2.weight, mlp.fc1/fc2.weight (transposed), mixer.Wqkv/out_proj.weight
         (transposed; Wqkv's 3·D output order q|k|v by head is ours), Mamba2 mixer.in_proj.weight
         (transposed; z|x|B|C|dt order is ours), mixer.conv1d.weight (C, 1, W) -> conv_weight (W, C),
         mixer.conv1d.bias -> conv_bias, mixer.norm.weight -> norm_weight, dt_bias, A_log, D.
"""
# pylint: disable=invalid-name
import dataclasses
import json
import logging
import math
import os
from typing import Any

import jax
import ml_dtypes
import numpy as np
from flax import nnx

from hnet.config import SWIGLU_MULTIPLE, ModelConfig, StageConfig, model_config_from_dict, parse_layout, round_up
from hnet.convert.torch_files import TensorRef, read_state_dict
from hnet.model.lm import HNetLM

log = logging.getLogger(__name__)

COPY, LINEAR, CONV = "copy", "linear", "conv"
_FLOAT_DTYPES = tuple(np.dtype(d) for d in (np.float16, ml_dtypes.bfloat16, np.float32, np.float64))


@dataclasses.dataclass(frozen=True)
class Source:
  """Where one of our parameters comes from: official tensors (one per stacked layer) and their layout."""
  names: tuple[str, ...]
  kind: str  # COPY: same layout; LINEAR: (out, in) -> (in, out); CONV: (C, 1, W) -> (W, C)
  stacked: bool  # our parameter stacks the tensors on a leading "layers" axis


_MAMBA = {("norm1", "weight"): ("norm1.weight", COPY),
          ("mixer", "in_proj", "kernel"): ("mixer.in_proj.weight", LINEAR),
          ("mixer", "conv_weight"): ("mixer.conv1d.weight", CONV),
          ("mixer", "conv_bias"): ("mixer.conv1d.bias", COPY),
          ("mixer", "dt_bias"): ("mixer.dt_bias", COPY),
          ("mixer", "A_log"): ("mixer.A_log", COPY),
          ("mixer", "D"): ("mixer.D", COPY),
          ("mixer", "norm_weight"): ("mixer.norm.weight", COPY),
          ("mixer", "out_proj", "kernel"): ("mixer.out_proj.weight", LINEAR)}
_ATTENTION = {("norm1", "weight"): ("norm1.weight", COPY),
              ("mixer", "wqkv", "kernel"): ("mixer.Wqkv.weight", LINEAR),
              ("mixer", "out_proj", "kernel"): ("mixer.out_proj.weight", LINEAR)}
_MLP = {("norm2", "weight"): ("norm2.weight", COPY),
        ("mlp", "fc1", "kernel"): ("mlp.fc1.weight", LINEAR),
        ("mlp", "fc2", "kernel"): ("mlp.fc2.weight", LINEAR)}


# ---------------------------------------------------------------------------------------------
# The name map
# ---------------------------------------------------------------------------------------------
def _stack_sources(groups, ours: tuple, theirs: str) -> dict[tuple, Source]:
  out = {ours + ("norm", "weight"): Source((f"{theirs}.rmsnorm.weight",), COPY, False)}
  first = 0
  for g, group in enumerate(groups):
    block = dict(_MAMBA if group.mixer == "mamba" else _ATTENTION)
    if group.has_mlp:
      block.update(_MLP)
    for suffix, (name, kind) in block.items():
      names = tuple(f"{theirs}.layers.{first + i}.{name}" for i in range(group.count))
      out[ours + ("groups", g, "blocks") + suffix] = Source(names, kind, True)
    first += group.count
  return out


def sources(cfg: ModelConfig) -> dict[tuple, Source]:
  """Our parameter path (as in `nnx.to_flat_state`) -> the official tensors it is made of."""
  out = {("embed", "embedding"): Source(("embeddings.weight",), COPY, False),
         ("lm_head", "kernel"): Source(("lm_head.weight",), LINEAR, False)}
  for s, st in enumerate(cfg.stages):
    ours, theirs = ("backbone",) + ("inner",) * s, "backbone" + ".main_network" * s
    if s and st.d_model > cfg.stages[s - 1].d_model:
      out[ours + ("pad_dimension",)] = Source((f"{theirs}.pad_dimension",), COPY, False)
    if st.is_innermost:
      out.update(_stack_sources(st.main, ours + ("main",), f"{theirs}.main_network"))
      continue
    out.update(_stack_sources(st.encoder, ours + ("encoder",), f"{theirs}.encoder"))
    out.update(_stack_sources(st.decoder, ours + ("decoder",), f"{theirs}.decoder"))
    out[ours + ("router", "w_q")] = Source((f"{theirs}.routing_module.q_proj_layer.weight",), LINEAR, False)
    out[ours + ("router", "w_k")] = Source((f"{theirs}.routing_module.k_proj_layer.weight",), LINEAR, False)
    out[ours + ("residual_proj", "kernel")] = Source((f"{theirs}.residual_proj.weight",), LINEAR, False)
    out[ours + ("residual_proj", "bias")] = Source((f"{theirs}.residual_proj.bias",), COPY, False)
  return out


def abstract_params(cfg: ModelConfig) -> nnx.State:
  """The model's parameters as ShapeDtypeStructs (no memory used)."""
  if cfg.router != "cosine":
    raise ValueError(f"model.router={cfg.router!r}: the official H-Net checkpoints use the 'cosine' router")
  model = nnx.eval_shape(lambda: HNetLM(cfg, rngs=nnx.Rngs(params=0)))
  return nnx.state(model, nnx.Param)


def _matched(cfg: ModelConfig) -> tuple[nnx.State, dict[tuple, Source]]:
  """Abstract params and the name map, checked to cover exactly the same parameters."""
  params = abstract_params(cfg)
  paths = {path for path, _ in nnx.to_flat_state(params)}
  src = sources(cfg)
  for path in sorted(paths ^ set(src), key=str):
    where = "has" if path in paths else "lacks"
    raise ValueError(f"the model {where} parameter {'/'.join(map(str, path))}, which the converter does not "
                     "map: hnet/convert/official.py needs updating for this model")
  return params, src


def _official_shape(kind: str, shape: tuple[int, ...]) -> tuple[int, ...]:
  if kind == LINEAR:
    return shape[::-1]
  if kind == CONV:
    return (shape[1], 1, shape[0])
  return shape


def _expected(params: nnx.State, src: dict[tuple, Source]) -> dict[str, tuple[int, ...]]:
  out = {}
  for path, var in nnx.to_flat_state(params):
    s = src[path]
    per_layer = tuple(var.shape[1:]) if s.stacked else tuple(var.shape)
    out.update({name: _official_shape(s.kind, per_layer) for name in s.names})
  return out


def expected_tensors(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
  """Official tensor name -> shape that the model built from `cfg` needs."""
  return _expected(*_matched(cfg))


# ---------------------------------------------------------------------------------------------
# Checks and conversion
# ---------------------------------------------------------------------------------------------
def check_tensors(tensors: dict[str, TensorRef], expected: dict[str, tuple[int, ...]], source: str) -> None:
  """One-line ValueError naming the first missing, extra, mis-shaped or non-float tensor."""
  missing = [n for n in expected if n not in tensors]
  if missing:
    raise ValueError(f"{source}: tensor {missing[0]} is missing ({len(missing)} of the {len(expected)} tensors "
                     f"the config needs {'is' if len(missing) == 1 else 'are'} absent: is it the right --config?)")
  extra = [n for n in tensors if n not in expected]
  if extra:
    raise ValueError(f"{source}: tensor {extra[0]} is not part of the model the config builds "
                     f"({_count(len(extra), 'unexpected tensor')}: is it the right --config?)")
  for name, want in expected.items():
    t = tensors[name]
    if tuple(t.shape) != want:
      raise ValueError(f"{source}: tensor {name} has shape {tuple(t.shape)}, the config needs {want}")
    if t.dtype not in _FLOAT_DTYPES:
      raise ValueError(f"{source}: tensor {name} has dtype {t.dtype}, not floating point")


def _count(n: int, noun: str) -> str:
  return f"{n} {noun}" + ("" if n == 1 else "s")


def _to_ours(kind: str, x: np.ndarray) -> np.ndarray:
  if kind == LINEAR:
    return x.T
  if kind == CONV:
    return x[:, 0, :].T
  return x


def convert(tensors: dict[str, TensorRef], cfg: ModelConfig, source: str = "state dict") -> nnx.State:
  """Float32 parameters (host arrays on the first CPU device) for `HNetLM(cfg)` from official tensors."""
  params, src = _matched(cfg)
  check_tensors(tensors, _expected(params, src), source)
  log.info("%s: %s checked; converting to float32", source, _count(len(tensors), "tensor"))
  cpu = jax.devices("cpu")[0]
  flat = []
  for path, var in nnx.to_flat_state(params):
    s = src[path]
    parts = []
    for name in s.names:
      x = tensors[name].load().astype(np.float32)
      if not np.isfinite(x).all():
        raise ValueError(f"{source}: tensor {name} holds NaN or infinite values")
      parts.append(np.ascontiguousarray(_to_ours(s.kind, x)))
    value = np.stack(parts) if s.stacked else parts[0]
    flat.append((path, var.replace(jax.device_put(value, cpu))))
  return nnx.from_flat_state(flat)


# ---------------------------------------------------------------------------------------------
# Official JSON configs
# ---------------------------------------------------------------------------------------------
def check_official_config(cfg: ModelConfig, official: dict, source: str = "official config") -> None:
  """One-line ValueError where `cfg` differs from an official JSON config (goombalab/hnet configs/*.json)."""
  def fail(what, ours, theirs):
    raise ValueError(f"{source}: {what} is {theirs!r} there but {ours!r} in this config")

  try:
    theirs_groups = parse_layout(official["arch_layout"])
  except ValueError as e:
    raise ValueError(f"{source}: arch_layout: {e}") from None
  ours_groups = [*(st.encoder for st in cfg.stages[:-1]), cfg.stages[-1].main,
                 *(st.decoder for st in cfg.stages[-2::-1])]
  if ours_groups != theirs_groups:
    fail("arch_layout", [[f"{g.kind}{g.count}" for g in x] for x in ours_groups], official["arch_layout"])
  S = cfg.num_stages
  stages: list[StageConfig] = list(cfg.stages)
  for key, ours in (("d_model", [st.d_model for st in stages]),
                    ("d_intermediate", [st.d_ff for st in stages])):
    theirs = list(official[key])
    if key == "d_intermediate":
      theirs = [round_up(x, SWIGLU_MULTIPLE) if x > 0 else 0 for x in theirs]  # SwiGLU rounds up to 128, as we do
      ours = [f if any(g.has_mlp for g in st.encoder + st.main + st.decoder) else t
              for f, t, st in zip(ours, theirs, stages)]  # unused where no layer has an MLP
    if list(ours) != theirs[:S] or len(theirs) != S:
      fail(key, list(ours), list(official[key]))
  if official.get("vocab_size", 256) != cfg.vocab_size:
    fail("vocab_size", cfg.vocab_size, official.get("vocab_size"))
  if official.get("tie_embeddings", False):
    fail("tie_embeddings", False, True)
  ssm = official.get("ssm_cfg", {})
  for key, ours in (("d_state", cfg.ssm_d_state), ("expand", cfg.ssm_expand), ("d_conv", cfg.ssm_d_conv),
                    ("headdim", cfg.ssm_head_dim)):
    theirs = ssm.get(key, {"d_state": 128, "expand": 2, "d_conv": 4, "headdim": 64}[key])  # Mamba2 defaults
    if theirs != ours:
      fail(f"ssm_cfg.{key}", ours, theirs)
  attn = official.get("attn_cfg", {})
  for key, field in (("num_heads", "num_heads"), ("rotary_emb_dim", "rotary_dim"), ("window_size", "window")):
    for s, st in enumerate(stages):
      if not any(g.mixer == "attention" for g in st.encoder + st.main + st.decoder):
        continue  # unused at a stage without attention
      theirs = attn.get(key, [])
      if s >= len(theirs) or theirs[s] != getattr(st, field):
        fail(f"attn_cfg.{key}[{s}]", getattr(st, field), theirs[s] if s < len(theirs) else None)


# ---------------------------------------------------------------------------------------------
# Writing the checkpoint
# ---------------------------------------------------------------------------------------------
def exact_inference(c) -> None:
  """Sets `model.capacity_slack` so that capacity = length at every stage: no boundary is ever dropped,
  as in the official model, which has no capacity (ceil(L / N * slack) >= L when slack >= N)."""
  c.model.capacity_slack = float(max([*map(float, c.model.target_ratio), 1.0]))


def _new_checkpoint_dir(workdir: str) -> str:
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if os.path.isdir(ckpt_dir) and any(d.isdigit() for d in os.listdir(ckpt_dir)):
    raise ValueError(f"{ckpt_dir} already holds checkpoints: give a new --workdir")
  return ckpt_dir


def write_checkpoint(workdir: str, params: nnx.State, config_json: dict) -> str:
  """`<workdir>/checkpoints/0` with the parameters only (a fine-tune starts from them) and the config."""
  from hnet.train.checkpoint import Checkpointer  # pylint: disable=import-outside-toplevel
  ckpt_dir = _new_checkpoint_dir(workdir)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
    json.dump(config_json, f, indent=2)
  ckpt = Checkpointer(ckpt_dir, keep=1, async_save=False)
  try:
    ckpt.save(0, {"params": params}, config=config_json)
  finally:
    ckpt.close()
  return os.path.join(ckpt_dir, "0")


def convert_file(path: str, c, workdir: str, official_config: str | None = None) -> dict[str, Any]:
  """Converts `path` for the ConfigDict `c` into `workdir`; returns a summary."""
  _new_checkpoint_dir(workdir)  # before the (long) conversion
  exact_inference(c)
  cfg = model_config_from_dict(c.model)
  if official_config:
    with open(official_config, encoding="utf-8") as f:
      check_official_config(cfg, json.load(f), official_config)
  tensors = read_state_dict(path)
  params = convert(tensors, cfg, os.path.basename(path))
  n = sum(math.prod(x.shape) for x in jax.tree.leaves(params))
  log.info("writing %s parameters to %s", f"{n:,}", workdir)
  where = write_checkpoint(workdir, params, json.loads(c.to_json_best_effort()))
  return {"checkpoint": where, "tensors": len(tensors), "parameters": n,
          "capacity_slack": c.model.capacity_slack}
