"""H-Net's step overhead over a flat Transformer of equal FLOPs, from XLA's TPU cost model (no accelerator).

  python -m bench.step_overhead                       # one v5p chip, batch 8 x 8192 bytes, every model
  python -m bench.step_overhead --models hnet_1stage_L flat_1stage_L --out bench/results/step_overhead_v5p.json

Compiles ahead of time, on this CPU host, for one chip of a v5p topology (libtpu's description; jax
stays on the CPU) the training step that `train.py` runs (`trainer.jit_train_step`: forward,
backward with the configs' `remat`, AdamW update; bf16) of `hnet_1stage_L`, `hnet_2stage_L` and of
flat byte Transformers whose training FLOPs/byte match them (`bench.train_step._flat_matching`), and
reads XLA's cost analysis (`optimal_seconds`, its estimated time) and its per-op cycle estimates.

How the estimate is made, and what it cannot see:
- `optimal_seconds` adds up per-op estimates and is valid for loop-free programs only, so layers are
  unrolled (`model.scan_layers=False`, tested equal to the scan). An unrolled 30-layer step takes
  this 2-core host tens of minutes to compile, so each group of identical layers is cut to one
  layer (`reduced`); the ops of each component are found by their named scopes (hnet/model/lm.py,
  stage.py, stack.py, trainer.py) and a layer component's cycles are multiplied by the layers of
  its kind. The AdamW update is compiled alone for the full model's parameters.
- the Pallas attention kernels (splash, `attention_impl='auto'` on TPU) are custom calls the cost
  model prices at ~0. Their time is added from the FLOPs they execute (causal pairs, the forward
  kernel's 2 matmuls and the fused backward's 5, times the calls per layer found in the program) at
  an assumed `--attention_efficiency` of peak (default 0.5): an assumption, printed with every figure.
- scatters (the index bookkeeping of dynamic chunking) run on v5p's SparseCore as asynchronous
  offloads, which the cost model does not price (it adds -1 s per offload start and done; those are
  taken back out and counted, `unpriced_ops`).

Every figure is an XLA cost model estimate for v5p, not a measured speed.
"""
# pylint: disable=invalid-name
import argparse
import ast
import copy
import datetime
import json
import os
import re
import subprocess
import time

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from hnet import sharding
from hnet.config import model_config_from_dict
from hnet.configs import hnet_1stage_L, hnet_2stage_L
from hnet.model import routers
from hnet.model.flops import attention_context, flops_breakdown, flops_per_byte
from hnet.train import accelerators, trainer
from hnet.train.optim import make_optimizer

TOPOLOGY = "v5p:2x2x1"  # libtpu describes no single-chip v5p slice; one chip of this one is used
PEAK_FLOPS = accelerators.TPU_GENERATIONS["v5p"].peak_flops
LABEL = "XLA cost model estimate, v5p, not a measured speed"
MODELS = ("hnet_1stage_L", "flat_1stage_L", "hnet_2stage_L", "flat_2stage_L")
# The entry computation's async offloads (v5p runs scatters on its SparseCore): the cost model
# cannot price them and adds -1 s for each start and each done.
_OFFLOAD_RE = re.compile(r"^\s*(?:ROOT )?%(?!prepare_)\w+_offload_async_(?:start|done)(?:\.\d+)? = ", re.M)


def chip():
  """One v5p chip, described by libtpu: compile for it, never run on it."""
  jax.config.update("jax_platforms", "cpu")
  return accelerators.tpu_devices(TOPOLOGY)[0]


def model_configs(batch: int, names=MODELS, variant: str | None = None) -> dict:
  """name -> training config: the paper's H-Nets and flat Transformers of equal training FLOPs/byte."""
  from bench.train_step import _flat_matching  # pylint: disable=import-outside-toplevel  (absl flags)
  hnets = {"hnet_1stage_L": hnet_1stage_L.get_config(variant), "hnet_2stage_L": hnet_2stage_L.get_config(variant)}
  out = {}
  for name in names:
    if name.startswith("flat_"):
      ref = hnets["hnet_" + name[len("flat_"):]]
      out[name] = for_cost_model(_flat_matching(ref, ref.data.seq_len, variant), batch)
    else:
      out[name] = for_cost_model(copy.deepcopy(hnets[name]), batch)
  return out


def for_cost_model(c, batch: int):
  """`c` on one chip at `batch` rows, its layers unrolled: a loop-free program, so optimal_seconds is valid."""
  c.train.batch_size = batch
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, 1, 1
  c.model.scan_layers = False
  return c


def cost(compiled) -> dict:
  """XLA's cost analysis of a compiled program, with unpriced offloaded ops taken back out."""
  ca = compiled.cost_analysis()
  ca = dict(ca[0] if isinstance(ca, (list, tuple)) else ca)
  hlo = compiled.as_text()
  unpriced = len(_OFFLOAD_RE.findall(hlo))
  seconds = ca.get("optimal_seconds", 0.0) + unpriced
  if seconds < 0:
    raise RuntimeError(f"optimal_seconds {ca.get('optimal_seconds')} with {unpriced} offloaded ops: "
                       "the cost model priced an op it cannot estimate")
  return {"xla_flops": ca.get("flops", 0.0), "gb_accessed": ca.get("bytes accessed", 0.0) / 1e9,
          "xla_s": seconds, "unpriced_ops": unpriced, "has_loops": " while(" in hlo,
          "splash_calls": splash_calls(hlo)}


def splash_calls(hlo: str) -> dict:
  """Splash kernels in a compiled program: forward calls and fused backward calls."""
  calls = [line for line in hlo.splitlines() if 'custom_call_target="tpu_custom_call"' in line]
  return {"fwd": sum("splash_mha_fwd" in line for line in calls), "bwd": sum("splash_mha_dkv" in line for line in calls),
          "other": sum("splash_mha" not in line for line in calls)}


def causal_pairs(length: int, window: int) -> float:
  """(query, key) pairs a causal (windowed) query row set attends to: the kernel's useful work."""
  return attention_context(length, window) * length


def attention_kernel_flops(cfg, seq_len: int, batch: int, fwd_calls_per_layer: int, bwd_calls_per_layer: int
                           ) -> float:
  """FLOPs the splash kernels execute in one step: 4·K per pair and head forward, 10·K fused backward."""
  total = 0.0
  for s, length in enumerate(routers.stage_lengths(cfg, seq_len, train=True)):
    st = cfg.stages[s]
    layers = sum(g.count for g in st.encoder + st.main + st.decoder if g.mixer == "attention")
    per_pair = st.head_dim * st.num_heads * (4 * fwd_calls_per_layer + 10 * bwd_calls_per_layer)
    total += layers * batch * causal_pairs(length, st.window) * per_pair
  return total


def abstract_step(c, device):
  """The lowered training step of `c` on one chip, exactly as `trainer.jit_train_step` builds it."""
  model_cfg = model_config_from_dict(c.model)
  mesh = sharding.make_mesh(1, 1, 1, devices=[device])
  step, state, batch, _ = trainer.abstract_train_step(c, model_cfg, mesh)
  # Default precision, as on an accelerator: Mosaic rejects bf16 matmuls at 'highest' (which tests set).
  with jax.set_mesh(mesh), jax.default_matmul_precision("default"):
    return step.lower(state, batch), model_cfg


def reduced(c):
  """`c` with every group of identical layers cut to one layer (the same program per layer, compiled once)."""
  c = copy.deepcopy(c)
  layout = ast.literal_eval(c.model.layout)
  cut = lambda node: [cut(n) for n in node] if isinstance(node, list) else re.sub(r"\d+", "1", node)  # noqa: E731
  c.model.layout = repr(cut(layout))
  return c


def layer_counts(cfg) -> dict:
  """(stage, layer scope) -> layers of that kind in the stage."""
  counts = {}
  for s, st in enumerate(cfg.stages):
    for g in st.encoder + st.main + st.decoder:
      for scope in ("mamba2",) if g.mixer == "mamba" else ("attention",):
        counts[(s, scope)] = counts.get((s, scope), 0) + g.count
      if g.has_mlp:
        counts[(s, "mlp")] = counts.get((s, "mlp"), 0) + g.count
  return counts


# flops_breakdown's names -> components (attention scores run in the kernels, priced separately)
_FLOPS_COMPONENT = {"ssm_proj": "mamba2", "ssm_conv": "mamba2", "ssd": "mamba2", "attn_proj": "attention",
                    "attn_scores": "attention kernels"}
SCOPES = ("optimizer", "loss", "lm_head", "embed", "mamba2", "attention", "mlp", "router", "chunk_index",
          "chunk_gather", "dechunk", "residual_proj")
_CYCLES_RE = re.compile(r'op_name="([^"]*)".*?"estimated_cycles":"(\d+)"')


def scope_of(op_name: str) -> tuple[int | None, str]:
  """(innermost stage, component) of an op from its named scopes (hnet/model/lm.py, stage.py, stack.py, trainer.py)."""
  layer = re.search(r"(?<![\w])(mamba2|attention|mlp)_stage(\d+)(?![\w])", op_name)
  if layer:  # a layer's scope names its stage (a rematerialised layer's backward loses the outer scopes)
    return int(layer[2]), layer[1]
  stages = re.findall(r"(?<![\w])stage(\d+)(?![\w])", op_name)
  for scope in SCOPES:
    if re.search(rf"(?<![\w]){scope}(?![\w])", op_name):
      return (int(stages[-1]) if stages and scope not in ("optimizer", "loss", "lm_head", "embed") else None), scope
  return (int(stages[-1]) if stages else None), "other"


def cycles_by_scope(hlo: str) -> dict:
  """(stage, component) -> XLA's estimated cycles of the ops carrying that named scope."""
  out = {}
  for op_name, cycles in _CYCLES_RE.findall(hlo):
    key = scope_of(op_name)
    out[key] = out.get(key, 0) + int(cycles)
  return out


def measure_step(c, device, efficiency: float) -> dict:
  """XLA's estimate of `c`'s training step on the chip, by component, plus the attention kernels.

  Compiled with one layer per group (`reduced`), unrolled; each layer component's cost is scaled by
  the layers of its kind in the full model, and the AdamW update is compiled alone for the full
  model's parameters. Components come from the ops' named scopes and XLA's per-op cycle estimates
  (their sum is `optimal_seconds`, which sets the clock).
  """
  cfg = model_config_from_dict(c.model)
  t0 = time.perf_counter()
  lowered, small_cfg = abstract_step(reduced(c), device)
  compiled = lowered.compile()
  row = {"compile_s": round(time.perf_counter() - t0, 1), **cost(compiled)}
  hlo = compiled.as_text()
  by_scope = cycles_by_scope(hlo)
  seconds_per_cycle = row["xla_s"] / max(sum(by_scope.values()), 1)
  full, small = layer_counts(cfg), layer_counts(small_cfg)
  parts = {}
  for (s, scope), cycles in by_scope.items():
    scale = full[(s, scope)] / small[(s, scope)] if (s, scope) in small else 1
    name = scope if s is None else f"stage{s}/{scope}"
    parts[name] = {"s": cycles * seconds_per_cycle * scale, "layers": full.get((s, scope))}
  opt = measure_program(*optimizer_component(c)[2:], device)
  del opt["hlo"]
  parts["optimizer"] = {"s": opt["xla_s"], "layers": None}
  B, L = c.train.batch_size, c.data.seq_len
  layers = sum(small.get((s, "attention"), 0) for s in range(len(cfg.stages)))
  calls = row["splash_calls"]
  per_layer = (calls["fwd"] / layers, calls["bwd"] / layers) if layers else (0, 0)
  kernel_flops = attention_kernel_flops(cfg, L, B, *per_layer)
  model_flops = 3 * flops_per_byte(cfg, L, train=True) * B * L
  row.update(batch=B, seq_len=L, layout=c.model.layout, compiled_layout=reduced(c).model.layout,
             model_tflop=model_flops / 1e12, attention_kernel_tflop=kernel_flops / 1e12,
             attention_efficiency=efficiency, attention_kernel_s=kernel_flops / (efficiency * PEAK_FLOPS),
             seconds_per_cycle=seconds_per_cycle)
  for key, fpb in flops_breakdown(cfg, L, train=True).items():  # model FLOPs (3 x forward) by component
    name = _FLOPS_COMPONENT.get(key.split("/")[-1], key.split("/")[-1])
    name = f"{key.split('/')[0]}/{name}" if "/" in key else name
    if name in parts:
      parts[name]["model_tflop"] = parts[name].get("model_tflop", 0.0) + 3 * fpb * B * L / 1e12
  for p in parts.values():
    if p.get("model_tflop"):
      p["model_pct_peak"] = 100 * p["model_tflop"] * 1e12 / p["s"] / PEAK_FLOPS
  row["xla_s"] = sum(p["s"] for p in parts.values())
  row["est_s"] = row["xla_s"] + row["attention_kernel_s"]
  row["components"] = dict(sorted(parts.items(), key=lambda kv: -kv[1]["s"]))
  row["model_tflops_per_s"] = model_flops / row["est_s"] / 1e12
  row["model_pct_peak"] = 100 * model_flops / row["est_s"] / PEAK_FLOPS
  return row


def measure_program(program, args, device) -> dict:
  """One program compiled alone for the chip: XLA's cost analysis."""
  sharding_ = NamedSharding(Mesh([device], ("chip",)), P())
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding_), args)
  compiled = jax.jit(program).lower(*abstract).compile()
  return {**cost(compiled), "hlo": compiled.as_text()}


def optimizer_component(c) -> tuple:
  """The AdamW update (clipping, moments, decay, lr multipliers) of the whole model's parameters."""
  cfg = model_config_from_dict(c.model)
  _, params = trainer.abstract_model(cfg, c.seed)
  tx, _ = make_optimizer(c.opt, params, num_steps=c.train.num_steps, model_cfg=cfg)
  opt_state = jax.eval_shape(tx.init, params)

  def update(grads, opt_state, params):
    updates, opt_state = tx.update(grads, opt_state, params)
    return jax.tree.map(jnp.add, params, updates), opt_state
  return ("optimizer_adamw", 1, update, (params, opt_state, params))


MAMBA2_PARTS = ("in_proj", "conv", "ssd", "gated_norm_out_proj")  # named scopes in hnet/layers/mamba2.py


def mamba2_layer(device, chunk: int = 256) -> dict:
  """bench.cost_model's Mamba2 layer (forward + backward, batch 4 x 8192, d 1024, bf16) split into its parts."""
  from bench import cost_model  # pylint: disable=import-outside-toplevel
  a = argparse.Namespace(batch=4, seq_len=8192, d_model=1024, expand=2, head_dim=64, d_state=128, d_ff=4096,
                         num_heads=16, dtype="bfloat16", ssd_impl="xla")
  fn, args, model_fwd_flops = cost_model.layer_program("mamba2", a, chunk)
  row = measure_program(fn, args, device)
  cycles = {}
  for op_name, c in _CYCLES_RE.findall(row.pop("hlo")):
    part = next((p for p in MAMBA2_PARTS if re.search(rf"(?<![\w]){p}(?![\w])", op_name)), "other")
    key = f"{part} {'backward' if 'transpose(' in op_name else 'forward'}"
    cycles[key] = cycles.get(key, 0) + int(c)
  total = sum(cycles.values())
  row.update(chunk=chunk, pct_peak_xla_flops=100 * row["xla_flops"] / row["xla_s"] / PEAK_FLOPS,
             parts_s={k: v / total * row["xla_s"] for k, v in sorted(cycles.items(), key=lambda kv: -kv[1])},
             model_pct_peak=100 * 3 * model_fwd_flops / row["xla_s"] / PEAK_FLOPS)
  return row


def _commit() -> str | None:
  return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False,
                        cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or None


def run(names, batch: int, efficiency: float, variant: str | None = None, device=None) -> dict:
  """Every model's step estimate and components; the result as one JSON-able dict."""
  device = device or chip()
  result = {"basis": LABEL, "date": datetime.date.today().isoformat(), "commit": _commit(), "jax": jax.__version__,
            "target": f"one chip of {TOPOLOGY} ({device.device_kind})", "peak_tflops": PEAK_FLOPS / 1e12,
            "batch": batch, "seq_len": None, "variant": variant, "attention_efficiency": efficiency,
            "method": "one layer per group compiled unrolled, layer components scaled by the layer counts; "
                      "AdamW compiled alone for the full parameters; splash kernels at the assumed efficiency",
            "steps": {}}
  for name, c in model_configs(batch, names, variant).items():
    row = measure_step(c, device, efficiency)
    result["steps"][name], result["seq_len"] = row, c.data.seq_len
    print(format_row(name, row), flush=True)
  for flat, hnet in (("flat_1stage_L", "hnet_1stage_L"), ("flat_2stage_L", "hnet_2stage_L")):
    if flat in result["steps"] and hnet in result["steps"]:
      result[f"{hnet}_over_flat"] = compare(result["steps"][hnet], result["steps"][flat])
      print(f"{hnet} / equal-FLOPs flat: " + ", ".join(
          f"{v:.3f}x at {k}" for k, v in result[f"{hnet}_over_flat"].items() if k.startswith("attention ")), flush=True)
  return result


def step_seconds(row: dict, efficiency: float) -> float:
  """The step estimate with the attention kernels at `efficiency` of peak instead of the row's assumption."""
  return row["xla_s"] + row["attention_kernel_tflop"] * 1e12 / (efficiency * PEAK_FLOPS)


def compare(hnet: dict, flat: dict, goal: float = 1.1) -> dict:
  """H-Net's estimated step time over the flat model's, at several kernel efficiencies (the cost model's blind
  spot), without the kernels, and the kernel efficiency below which the ratio stays within `goal`."""
  flops = hnet["model_tflop"] / flat["model_tflop"]  # the flat depth matches H-Net's FLOPs only to a layer
  out = {f"attention {e:.0%}": step_seconds(hnet, e) / step_seconds(flat, e) for e in (0.3, 0.5, 0.84, 1.0)}
  out["xla_only"] = hnet["xla_s"] / flat["xla_s"]
  out["model_flops"] = flops
  out.update({f"per model FLOP, attention {e:.0%}": step_seconds(hnet, e) / step_seconds(flat, e) / flops
              for e in (0.5, 1.0)})
  out["per model FLOP, xla_only"] = out["xla_only"] / flops
  # hnet_x + hnet_k / e <= goal (flat_x + flat_k / e), kernel terms k at 100% of peak
  hx, fx = hnet["xla_s"], flat["xla_s"]
  hk, fk = (r["attention_kernel_tflop"] * 1e12 / PEAK_FLOPS for r in (hnet, flat))
  if hx > goal * fx and goal * fk > hk:
    out[f"within {goal}x for kernel efficiencies up to"] = (goal * fk - hk) / (hx - goal * fx)
  return out


def format_row(name: str, row: dict) -> str:
  lines = [f"{name} ({row['layout']}, batch {row['batch']} x {row['seq_len']}): est {row['est_s'] * 1e3:.1f} ms = "
           f"XLA {row['xla_s'] * 1e3:.1f} + attention kernels {row['attention_kernel_s'] * 1e3:.1f} (assumed "
           f"{row['attention_efficiency']:.0%} of peak); {row['model_tflops_per_s']:.0f} model TFLOP/s = "
           f"{row['model_pct_peak']:.1f}% of peak; compiled {row['compiled_layout']} in {row['compile_s']:.0f} s"]
  for part, p in row["components"].items():
    lines.append(f"  {part:>24} {p['s'] * 1e3:8.2f} ms {100 * p['s'] / row['est_s']:5.1f}%"
                 + (f"  {p['model_pct_peak']:5.1f}% of peak" if p.get("model_pct_peak") else "")
                 + (f"  ({p['layers']} layers)" if p["layers"] else ""))
  lines.append(f"  {'attention kernels':>24} {row['attention_kernel_s'] * 1e3:8.2f} ms "
               f"{100 * row['attention_kernel_s'] / row['est_s']:5.1f}%")
  return "\n".join(lines)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
  p.add_argument("--batch", type=int, default=8, help="rows of 8192 bytes per step (one chip)")
  p.add_argument("--attention_efficiency", type=float, default=0.5,
                 help="assumed fraction of peak for the splash kernels the cost model cannot see into")
  p.add_argument("--variant", default=None, help="config variant ('tiny': a seconds-long smoke run)")
  p.add_argument("--mamba2_layer", action="store_true",
                 help="also split bench.cost_model's Mamba2 layer (chunk 256) into its parts")
  p.add_argument("--out", default=None, help="write the result as JSON here")
  a = p.parse_args()
  print(f"{LABEL}; one chip of {TOPOLOGY}, batch {a.batch}", flush=True)
  result = run(a.models, a.batch, a.attention_efficiency, a.variant)
  if a.mamba2_layer:
    layer = result["mamba2_layer"] = mamba2_layer(chip())
    print(f"Mamba2 layer (bench.cost_model's shape, chunk 256): {layer['xla_s'] * 1e3:.2f} ms, "
          f"{layer['pct_peak_xla_flops']:.1f}% of peak (XLA FLOPs), {layer['gb_accessed']:.1f} GB")
    for part, sec in layer["parts_s"].items():
      print(f"  {part:>30} {sec * 1e3:6.2f} ms {100 * sec / layer['xla_s']:5.1f}%")
  if a.out:
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w", encoding="utf-8") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  main()
