"""Cached generation (hnet.model.generate) vs full recompute per new byte, at 1024 bytes.

  python -m bench.generation                          # configs/hnet_attn.py and configs/hnet_1stage.py, CPU
  python -m bench.generation --configs flat hnet_2stage:tiny --batch 1 4 --recompute_steps 32

Cached: `generate` runs BOS + prompt + new bytes up to `--length` bytes in one jitted scan,
stepping every layer's cache (Mamba2 state, attention KV, per-stage chunk state) per byte.
Recompute: a jitted forward over the whole padded `--length`-byte buffer for every new
byte, reading the logits at the current position. A recompute step costs the same at every
position (the buffer is always full length), so only `--recompute_steps` steps are timed
and the total is extrapolated to all `length - prompt` steps (reported as such). Both use
randomly initialised parameters (the cost does not depend on the values) and greedy
decoding; `agree` is the fraction of the timed recompute steps whose byte equals the cached one.
"""
# pylint: disable=invalid-name
import argparse
import datetime
import importlib
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hnet import BOS_ID
from hnet.config import model_config_from_dict
from hnet.model import generate
from hnet.model.lm import HNetLM, count_params

PROMPT = b"The "


def device_name(device) -> str:
  """'cpu (<CPU model>)' on CPU, else the accelerator's kind."""
  if device.platform != "cpu":
    return f"{device.platform} {device.device_kind}"
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    model = platform.processor() or platform.machine()
  return f"cpu ({model})"


@jax.jit(static_argnums=0)
def _forward_at(graphdef, params, tokens_BL, t):
  logits_BLV, _ = nnx.merge(graphdef, params)(tokens_BL, None, train=False)
  return jnp.argmax(logits_BLV[:, t], axis=-1).astype(jnp.int32)


def cached(model, batch: int, length: int, repeats: int) -> tuple[float, float, np.ndarray]:
  """(compile + first run s, best run s, tokens) for batch x (length - 1 - len(PROMPT)) new bytes."""
  new = length - 1 - len(PROMPT)
  run = lambda: generate.generate(model, [PROMPT] * batch, max_new_bytes=new, temperature=0.0,  # noqa: E731
                                  stop_at_eos=False)
  t0 = time.perf_counter()
  out = run()
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = run()
    times.append(time.perf_counter() - t0)
  return first, min(times), np.frombuffer(out[0], np.uint8)


def recompute(model, batch: int, length: int, steps: int, reference: np.ndarray) -> tuple[float, float, float]:
  """(compile s, seconds per new byte, agreement with `reference`) over `steps` timed steps."""
  graphdef, params = nnx.split(model)
  buf = np.zeros((batch, length), np.int32)
  start = 1 + len(PROMPT)
  buf[:, :start] = np.frombuffer(bytes([BOS_ID]) + PROMPT, np.uint8)
  tokens_BL = jnp.asarray(buf)
  t0 = time.perf_counter()
  jax.block_until_ready(_forward_at(graphdef, params, tokens_BL, start - 1))
  compile_s = time.perf_counter() - t0
  agree = 0
  t0 = time.perf_counter()
  for t in range(start - 1, start - 1 + steps):
    next_B = _forward_at(graphdef, params, tokens_BL, t)
    tokens_BL = tokens_BL.at[:, t + 1].set(next_B)
    agree += int(next_B[0]) == int(reference[t + 1 - start])
  jax.block_until_ready(tokens_BL)
  return compile_s, (time.perf_counter() - t0) / steps, agree / steps


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", nargs="+", default=["hnet_attn", "hnet_1stage"],
                      help="modules in configs/, optionally with a variant: 'hnet_1stage:tiny'")
  parser.add_argument("--length", type=int, default=1024, help="bytes per sequence (BOS + prompt + new)")
  parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
  parser.add_argument("--recompute_steps", type=int, default=48)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "generation_cpu.json"))
  args = parser.parse_args()

  device = jax.devices()[0]
  print(f"{device_name(device)}, {os.cpu_count()} CPUs (load {os.getloadavg()[0]:.1f}); jax {jax.__version__}")
  rows, models = [], {}
  new = args.length - 1 - len(PROMPT)
  for spec in args.configs:
    name, _, variant = spec.partition(":")
    c = importlib.import_module(f"hnet.configs.{name}").get_config(variant or None)
    model = HNetLM(model_config_from_dict(c.model), rngs=nnx.Rngs(params=0))
    models[spec] = {"layout": c.model.layout, "d_model": list(c.model.d_model), "window": list(c.model.window),
                    "params": count_params(model)}
    print(f"{spec}: {models[spec]}")
    for B in args.batch:
      c_first, c_best, ref = cached(model, B, args.length, args.repeats)
      r_compile, r_step, agree = recompute(model, B, args.length, args.recompute_steps, ref)
      rows.append({"config": spec, "batch": B, "length": args.length, "new_bytes": new, "cached_s": c_best,
                   "cached_compile_and_first_s": c_first, "cached_ms_per_byte": 1e3 * c_best / new,
                   "recompute_ms_per_byte": 1e3 * r_step, "recompute_s_extrapolated": r_step * new,
                   "recompute_steps_timed": args.recompute_steps, "recompute_compile_s": r_compile,
                   "speedup": r_step * new / c_best, "greedy_agree": agree})
  print("| config | batch | new bytes | cached s | cached ms/byte | recompute ms/byte | recompute s (extrapolated) | "
        "speed-up | greedy agree |")
  print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
  for r in rows:
    print(f"| {r['config']} | {r['batch']} | {r['new_bytes']} | {r['cached_s']:.2f} | {r['cached_ms_per_byte']:.2f} | "
          f"{r['recompute_ms_per_byte']:.1f} | {r['recompute_s_extrapolated']:.1f} | {r['speedup']:.1f}x | "
          f"{r['greedy_agree']:.2f} |")
  result = {"date": datetime.date.today().isoformat(), "device": device_name(device), "cpus": os.cpu_count(),
            "load_avg_1min": os.getloadavg()[0], "jax": jax.__version__, "prompt": PROMPT.decode(),
            "recompute_note": f"{args.recompute_steps} recompute steps timed, extrapolated to {new}",
            "models": models, "rows": rows}
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
