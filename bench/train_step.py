"""Times jitted training steps of any config on synthetic packed bytes (no input pipeline).

  python -m bench.train_step --config configs/hnet_1stage_L.py --config.train.batch_size=8 --steps 10

Prints one JSON line and writes it under bench/results/ (with --out): device, jax version,
bytes/s, step time, model FLOPs/byte, MFU (3 x forward FLOPs, capacity basis and target
basis), peak memory and compile time. Warm-up steps are excluded; every timed step ends
in `block_until_ready`.
"""
import json
import os
import time

import jax
import numpy as np
from absl import app, flags
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P
from ml_collections import config_flags

from hnet import sharding, trainer
from hnet.config import model_config_from_dict
from hnet.flops import flops_per_byte
from hnet.metrics import device_peak_flops
from hnet.model import count_params
from hnet.optim import make_optimizer

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/hnet_1stage.py", "Config file.", lock_config=True)
flags.DEFINE_integer("steps", 10, "Timed steps.")
flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
flags.DEFINE_string("out", None, "Write the JSON result to this file (e.g. bench/results/x.json).")
flags.DEFINE_string("name", None, "Name of this measurement in the JSON.")


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


def run(c, steps: int, warmup: int) -> dict:
  model_cfg = model_config_from_dict(c.model)
  mesh = sharding.make_mesh(c.mesh.data, c.mesh.fsdp, c.mesh.tensor)
  batch_sharding = sharding.batch_sharding(mesh)
  graphdef, params, _ = trainer.make_model(model_cfg, mesh, c.seed)
  tx, schedule = make_optimizer(c.opt, params, num_steps=max(c.train.num_steps, steps + warmup + 1),
                                model_cfg=model_cfg)
  state, state_sharding = trainer.init_train_state(params, tx, mesh)
  replicated = NamedSharding(mesh, P())
  with jax.set_mesh(mesh):
    step_fn = jax.jit(trainer.make_train_step(graphdef, model_cfg, c, tx, schedule),
                      in_shardings=(state_sharding, batch_sharding), out_shardings=(state_sharding, replicated),
                      donate_argnums=0)
    batch = trainer.to_global(synthetic_batch(c.train.batch_size, c.data.seq_len), batch_sharding)
    t0 = time.perf_counter()
    compiled = step_fn.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
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
  result = {
      "device": kind, "devices": n_dev, "jax": jax.__version__, "layout": c.model.layout,
      "router": c.model.router, "params": count_params(nnx.merge(graphdef, state.params)),
      "batch": c.train.batch_size, "seq_len": c.data.seq_len, "dtype": c.model.dtype,
      "step_time_s": step_time, "bytes_per_s": bytes_per_step / step_time,
      "fwd_flops_per_byte": fpb, "fwd_flops_per_byte_target": fpb_target,
      "mfu": 3 * fpb * bytes_per_step / step_time / (peak * n_dev) if peak else None,
      "mfu_target": 3 * fpb_target * bytes_per_step / step_time / (peak * n_dev) if peak else None,
      "peak_memory_gib": mem.get("peak_bytes_in_use", 0) / 2**30 or None,
      "compile_s": compile_s, "loss": float(metrics["loss"]),
      "boundary_frac": {k: float(v) for k, v in metrics.items() if k.endswith("boundary_frac")},
  }
  return result


def main(argv):
  del argv
  result = run(FLAGS.config, FLAGS.steps, FLAGS.warmup)
  if FLAGS.name:
    result["name"] = FLAGS.name
  line = json.dumps(result)
  print(line)
  if FLAGS.out:
    os.makedirs(os.path.dirname(FLAGS.out) or ".", exist_ok=True)
    with open(FLAGS.out, "a", encoding="utf-8") as f:
      f.write(line + "\n")


if __name__ == "__main__":
  app.run(main)
