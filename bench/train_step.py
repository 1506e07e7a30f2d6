"""Times jitted training steps of any config on synthetic packed bytes (no input pipeline).

  python -m bench.train_step --config configs/hnet_1stage_L.py --config.train.batch_size=8 --steps 10
  python -m bench.train_step --suite accelerator --out bench/results/train_step_accelerator.jsonl

Prints one JSON line and writes it under bench/results/ (with --out): device, jax version,
bytes/s, step time, model FLOPs/byte, MFU (3 x forward FLOPs, capacity basis and target
basis), peak memory and compile time. Warm-up steps are excluded; every timed step ends
in `block_until_ready`.

`--suite accelerator` (issue 13; for one GPU or TPU chip) runs, in one process and on the same
device: the Mamba2 stack (8 Mamba2 layers, d 1024, 8192 bytes/row, chunk 256, bf16) with each
`model.ssd_impl`, H-Net 1-stage L, and a flat byte Transformer at d 1024 whose depth is chosen
so that its training FLOPs/byte match H-Net's; then a summary line with the Mamba2 stack's MFU
(target >= 0.35 on H100) and H-Net's bytes/s over the flat model's (target >= 0.9), with the
library versions. `--suite_variant tiny` shrinks every entry (a CPU smoke run of the suite).
"""
import copy
import importlib.metadata
import json
import os
import time

import jax
import numpy as np
from absl import app, flags
from flax import nnx
from ml_collections import config_flags

from hnet import sharding
from hnet.config import model_config_from_dict
from hnet.configs import base, hnet_1stage_L
from hnet.model.flops import flops_per_byte
from hnet.model.lm import count_params
from hnet.train import aot, trainer
from hnet.train.accelerators import device_peak_flops
from hnet.train.optim import make_optimizer

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command line's flags, defined only when this module is the program (bench.accelerator imports it)."""
  config_flags.DEFINE_config_file("config", "configs/hnet_1stage.py", "Config file.", lock_config=True)
  flags.DEFINE_integer("steps", 10, "Timed steps.")
  flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
  flags.DEFINE_string("out", None, "Write the JSON result to this file (e.g. bench/results/x.json).")
  flags.DEFINE_string("name", None, "Name of this measurement in the JSON.")
  flags.DEFINE_enum("suite", None, ["accelerator"], "Run a fixed set of measurements instead of --config.")
  flags.DEFINE_integer("suite_batch", 8, "Rows per step for every entry of --suite.")
  flags.DEFINE_string("suite_variant", None,
                      "Config variant applied to every entry of --suite ('tiny': CPU smoke run).")


def synthetic_batch(batch: int, length: int, seed: int = 0) -> dict:
  """Text-like random bytes, two documents per row, so routers see realistic boundaries."""
  rng = np.random.default_rng(seed)
  alphabet = np.frombuffer(b"etaoin shrdlu cmfwyp vbgkqjxz ETAOIN, .\n", np.uint8)
  tokens = rng.choice(alphabet, size=(batch, length + 1)).astype(np.int32)
  seg = np.ones((batch, length), np.int32)
  seg[:, length // 2:] = 2
  mask = (seg[:, 1:] == seg[:, :-1]).astype(np.float32)
  return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "segment_ids": seg,
          "loss_mask": np.concatenate([mask, np.zeros((batch, 1), np.float32)], axis=1)}


def run(c, steps: int, warmup: int, fit_bytes: int | None = None) -> dict:
  """Compiles and times `c`'s training step; with `fit_bytes`, halves the batch until XLA's plan fits it."""
  model_cfg = model_config_from_dict(c.model)
  mesh = sharding.mesh_of_config(c.mesh)
  batch_sharding = sharding.batch_sharding(mesh)
  graphdef, params, _ = trainer.make_model(model_cfg, mesh, c.seed)
  tx, schedule = make_optimizer(c.opt, params, num_steps=max(c.train.num_steps, steps + warmup + 1),
                                model_cfg=model_cfg)
  state, state_sharding = trainer.init_train_state(params, tx, mesh)
  with jax.set_mesh(mesh):
    step_fn = trainer.jit_train_step(graphdef, model_cfg, c, tx, schedule, state_sharding, mesh)
    while True:
      batch = sharding.to_global(synthetic_batch(c.train.batch_size, c.data.seq_len), batch_sharding)
      t0 = time.perf_counter()
      compiled = step_fn.lower(state, batch).compile()
      compile_s = time.perf_counter() - t0
      planned = aot.planned_bytes(compiled.memory_analysis())
      half = c.train.batch_size // 2
      if fit_bytes is None or planned <= fit_bytes or half < 1 or half % sharding.data_parallel_size(mesh.shape):
        break
      c.train.batch_size = half  # the plan does not fit: try half the rows
    for _ in range(warmup):
      state, metrics = compiled(state, batch)
    jax.block_until_ready(state)
    times = []
    for _ in range(steps):
      t0 = time.perf_counter()
      state, metrics = compiled(state, batch)
      jax.block_until_ready((state, metrics))
      times.append(time.perf_counter() - t0)
  step_time = float(np.median(times))
  bytes_per_step = c.train.batch_size * c.data.seq_len
  peak, kind = device_peak_flops()
  fpb = flops_per_byte(model_cfg, c.data.seq_len, train=True)
  fpb_target = flops_per_byte(model_cfg, c.data.seq_len, train=True, basis="target")
  mem = jax.devices()[0].memory_stats() or {}
  n_dev = jax.device_count()
  hlo = compiled.as_text()
  result = {
      "device": kind, "devices": n_dev, "jax": jax.__version__, "layout": c.model.layout,
      "router": c.model.router, "params": count_params(nnx.merge(graphdef, state.params)),
      "batch": c.train.batch_size, "seq_len": c.data.seq_len, "dtype": c.model.dtype,
      "step_time_s": step_time, "bytes_per_s": bytes_per_step / step_time,
      "fwd_flops_per_byte": fpb, "fwd_flops_per_byte_target": fpb_target,
      "mfu": 3 * fpb * bytes_per_step / step_time / (peak * n_dev) if peak else None,
      "mfu_target": 3 * fpb_target * bytes_per_step / step_time / (peak * n_dev) if peak else None,
      "peak_memory_gib": mem.get("peak_bytes_in_use", 0) / 2**30 or None,
      "planned_memory_gib": planned / 2**30,  # XLA's plan for this program, the figure `--aot` reports
      "kernels": aot.pallas_kernels(hlo), "cudnn_attention_calls": aot.cudnn_attention_calls(hlo),
      "compile_s": compile_s, "loss": float(metrics["loss"]),
      "boundary_frac": {k: float(v) for k, v in metrics.items() if k.endswith("boundary_frac")},
  }
  return result


def _mamba2_stack(impl: str):
  """8 Mamba2 layers at d 1024 on 8192-byte rows (the issue's H100 Mamba2 measurement), no hierarchy."""
  c = base.get_config()
  base.paper_scale(c)
  c.model.layout = "['m8']"
  c.model.d_model, c.model.d_ff, c.model.num_heads = (1024,), (0,), (16,)
  c.model.rotary_dim, c.model.window = (-1,), (-1,)
  c.model.router, c.model.target_ratio = "none", ()
  c.model.ssd_impl = impl
  return c


def _flat_matching(reference, seq_len: int, variant: str | None):
  """Flat byte Transformer at the reference's outer width whose training FLOPs/byte match it best."""
  target = flops_per_byte(model_config_from_dict(reference.model), seq_len, train=True)
  best = None
  for layers in range(1, 97):
    c = base.get_config()
    base.paper_scale(c)
    c.model.layout = f"['T{layers}']"
    c.model.d_model, c.model.d_ff = (reference.model.d_model[0],), (4 * reference.model.d_model[0],)
    c.model.num_heads, c.model.rotary_dim, c.model.window = (reference.model.num_heads[0],), (-1,), (-1,)
    c.model.router, c.model.target_ratio = "none", ()
    if variant:
      base.apply_variant(c, variant)
    gap = abs(flops_per_byte(model_config_from_dict(c.model), seq_len, train=True) - target)
    if best is None or gap < best[0]:
      best = (gap, c)
  return best[1]


def suite_configs(batch: int, variant: str | None) -> dict:
  """name -> config of the accelerator suite, every entry at the same batch and row length."""
  entries = {"mamba2_stack_xla": _mamba2_stack("xla"), "mamba2_stack_pallas": _mamba2_stack("pallas"),
             "hnet_1stage_L": hnet_1stage_L.get_config()}
  for c in entries.values():
    if variant:
      base.apply_variant(c, variant)
  entries["flat_equal_flops"] = _flat_matching(entries["hnet_1stage_L"], entries["hnet_1stage_L"].data.seq_len,
                                               variant)
  for c in entries.values():
    c.train.batch_size = batch
  return entries


def versions() -> dict:
  """jax, jaxlib, flax, optax and whichever accelerator plugins and CUDA libraries are installed."""
  out = {"jax": jax.__version__}
  for dist in ("jaxlib", "flax", "optax", "libtpu", "jax-cuda12-plugin", "jax-cuda12-pjrt", "jax-cuda13-plugin",
               "jax-cuda13-pjrt", "nvidia-cudnn-cu12", "nvidia-cudnn-cu13", "nvidia-cuda-runtime-cu12",
               "nvidia-cuda-runtime", "nvidia-cublas"):
    try:
      out[dist] = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
      pass
  return out


def run_suite(batch: int, variant: str | None, steps: int, warmup: int) -> list[dict]:
  """Every suite entry, then a summary line with the issue's two targets."""
  results = []
  for name, c in suite_configs(batch, variant).items():
    result = {"suite": "accelerator", "name": name, **run(copy.deepcopy(c), steps, warmup), "versions": versions()}
    print(json.dumps(result), flush=True)
    results.append(result)
  by_name = {r["name"]: r for r in results}
  hnet, flat = by_name["hnet_1stage_L"], by_name["flat_equal_flops"]
  summary = {
      "suite": "accelerator", "name": "summary", "device": results[0]["device"], "versions": versions(),
      "mamba2_stack_mfu": {k: by_name[f"mamba2_stack_{k}"]["mfu"] for k in ("xla", "pallas")},
      "mamba2_stack_mfu_target": 0.35,
      "flat_layout": flat["layout"],
      "hnet_over_flat_bytes_per_s": hnet["bytes_per_s"] / flat["bytes_per_s"],
      "hnet_over_flat_fwd_flops_per_byte": hnet["fwd_flops_per_byte"] / flat["fwd_flops_per_byte"],
      "hnet_over_flat_target": 0.9,
  }
  print(json.dumps(summary), flush=True)
  return results + [summary]


def main(argv):
  del argv
  if FLAGS.suite:
    lines = run_suite(FLAGS.suite_batch, FLAGS.suite_variant, FLAGS.steps, FLAGS.warmup)
  else:
    result = run(FLAGS.config, FLAGS.steps, FLAGS.warmup)
    if FLAGS.name:
      result["name"] = FLAGS.name
    print(json.dumps(result))
    lines = [result]
  if FLAGS.out:
    os.makedirs(os.path.dirname(FLAGS.out) or ".", exist_ok=True)
    with open(FLAGS.out, "a", encoding="utf-8") as f:
      for line in lines:
        f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
  define_flags()
  app.run(main)
