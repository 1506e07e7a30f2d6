"""One command for a short accelerator hour: what only hardware can answer, saved after every part.

  python -m bench.accelerator                      # one GPU or TPU chip, about 5 minutes (7.3 in time boxes)
  python -m bench.accelerator --variant tiny       # CPU smoke run of every part (CI), under a minute

Parts, in order, each with a time box (an entry that would start after its part's box is skipped and
said so; a watchdog saves what there is and exits at `--budget_s`):
  1. environment: device kind and count, jax / jaxlib / plugin / CUDA versions, memory;
  2. kernels, compiled for the device (interpret mode on CPU): the Pallas SSD scan against XLA's
     chunked SSD, and the platform's attention kernel (cuDNN on GPU, splash on TPU) against XLA's,
     outputs and gradients with packed documents, in float32 and bfloat16. The reference is XLA's
     float32 at 'highest' matmul precision; a kernel passes where its relative error is within the
     tolerance written in the file or within 2x XLA's own error at the same dtype;
  3. speed: `bench.train_step`'s accelerator suite (H-Net 1-stage L, an equal-FLOPs flat Transformer,
     the Mamba2 stack with each `ssd_impl`): bytes/s, MFU, peak memory, the batch chosen to fit;
  4. memory truth: the measured peak of H-Net 1-stage L's step (it runs first, so the device's peak
     counter is its own) against XLA's plan for the same program and the committed `--aot` fit table;
  5. generation: cached batched sampling bytes/s of H-Net 1-stage L at batch 1 and 16.

Results: one JSON, `bench/results/accelerator_<device>_<date>.json` (`--out_dir`), rewritten after every
part, and a markdown summary printed last. Every speed is measured on the device named in the file.
"""
# pylint: disable=invalid-name
import argparse
import copy
import datetime
import functools
import json
import os
import re
import sys
import threading
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bench import generation, train_step
from hnet.config import model_config_from_dict
from hnet.configs import hnet_1stage_L
from hnet.kernels import splash
from hnet.kernels.ssd import ssd_pallas
from hnet.kernels.ssd_xla import ssd_chunked
from hnet.layers.attention import attention_mask, dense_attention
from hnet.model.lm import HNetLM
from hnet.train import aot

# Relative error (max |kernel - reference| / max |reference|) a kernel may have against XLA float32 at
# 'highest' precision, beside "no worse than 2x XLA's own error at the same dtype".
TOLERANCE = {"float32": 2e-3, "bfloat16": 3e-2}
SIZES = {  # per variant: SSD (B, L, H, P, N, chunk), attention (B, L, H, K), generation length
    "full": {"ssd": (2, 4096, 16, 64, 128, 256), "attention": (2, 2048, 16, 64), "gen_length": 1024},
    "tiny": {"ssd": (2, 80, 4, 16, 16, 16), "attention": (2, 128, 2, 16), "gen_length": 32},
}
# Seconds per part; unused time carries over. On an H200 (2026-12-04) the parts took 0, 121, 104, 0 and 40 s
# (the kernels' time is compiles: 13 programs with XLA's autotuning).
BUDGETS_S = {"environment": 20, "kernels": 150, "speed": 200, "memory": 10, "generation": 60}
FIT_TABLE = os.path.join(os.path.dirname(__file__), "results", "will_it_fit_gpu.json")


class Results:
  """The JSON being built, written whole after every part (and by the watchdog) so a killed run keeps it."""

  def __init__(self, path: str):
    self.path = path
    self.data = {"parts": {}}
    self._lock = threading.Lock()

  def save(self) -> None:
    with self._lock:
      os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
      tmp = self.path + ".tmp"
      with open(tmp, "w", encoding="utf-8") as f:
        json.dump(self.data, f, indent=1, default=str)
      os.replace(tmp, self.path)


def _error(e: BaseException) -> str:
  return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"


def device_slug(device) -> str:
  """'h200', 'h100', 'tpu_v5p', 'cpu': the file name's device."""
  if device.platform == "cpu":
    return "cpu"
  kind = device.device_kind.lower()
  m = re.search(r"\b([ahbl]\d{2,3})\b", kind)
  if device.platform == "gpu" and m:
    return m[1]
  name = kind if kind.startswith(device.platform) else f"{device.platform} {kind}"
  return re.sub(r"[^a-z0-9]+", "_", name).strip("_")


# --------------------------------------------------------------------------- 1. environment

def environment() -> dict:
  device = jax.devices()[0]
  stats = device.memory_stats() or {}
  out = {"platform": device.platform, "device_kind": device.device_kind, "device": generation.device_name(device),
         "device_count": jax.device_count(), "process_count": jax.process_count(), "python": sys.version.split()[0],
         "versions": train_step.versions(), "memory_bytes_limit": stats.get("bytes_limit"), "cpus": os.cpu_count()}
  try:
    from jax._src.lib import cuda_versions  # pylint: disable=import-outside-toplevel  (no public API for these)
    if cuda_versions is not None:
      names = ("cuda_runtime_get_version", "cudnn_get_version", "cuda_driver_get_version")
      out["cuda"] = {k: getattr(cuda_versions, k)() for k in names if hasattr(cuda_versions, k)}
  except Exception as e:  # pylint: disable=broad-except
    out["cuda"] = _error(e)
  return out


# --------------------------------------------------------------------------- 2. kernels

def packed_segments(B: int, L: int) -> np.ndarray:
  """Rows of several documents of uneven lengths, a one-byte document and trailing padding (segment 0)."""
  seg = np.zeros((B, L), np.int32)
  for b in range(B):
    cuts = sorted({1 + b, L // 3 + 7 * b, L // 3 + 8 * b, (2 * L) // 3 + 5 * b})
    ends = [c for c in cuts if c < L - 4] + [L - 3 * (b + 1)]  # padding at the end of each row
    start = 0
    for i, end in enumerate(ends):
      seg[b, start:end] = i + 1
      start = end
  return seg


def relative_error(a, b) -> float:
  a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
  return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


def _compare(fns: dict, make_args, loss_and_outputs, deadline: float) -> dict:
  """Each candidate's outputs and gradients against XLA float32 at 'highest' precision, per dtype."""
  def evaluate(fn, dtype, precision="default"):
    args = make_args(dtype)
    with jax.default_matmul_precision(precision):
      run = jax.jit(jax.value_and_grad(lambda a: loss_and_outputs(fn, a), has_aux=True))
      (_, outputs), grads = run(args)
    return jax.tree.map(lambda x: np.asarray(x, np.float32), (outputs, grads))

  reference = evaluate(fns["xla"], jnp.float32, "highest")
  out = {}
  for dtype in (jnp.float32, jnp.bfloat16):
    name = jnp.dtype(dtype).name
    errors = {}
    for impl, fn in fns.items():
      if time.monotonic() > deadline:
        errors[impl] = {"skipped": "time box"}
        continue
      try:
        got = evaluate(fn, dtype)
        errors[impl] = {"outputs": max(relative_error(g, r) for g, r in zip(jax.tree.leaves(got[0]),
                                                                             jax.tree.leaves(reference[0]))),
                        "gradients": max(relative_error(g, r) for g, r in zip(jax.tree.leaves(got[1]),
                                                                               jax.tree.leaves(reference[1])))}
      except Exception as e:  # pylint: disable=broad-except  (a kernel that does not lower is a finding)
        errors[impl] = {"error": _error(e)}
    xla = errors.get("xla", {})
    for impl, e in errors.items():
      if impl != "xla" and "outputs" in e and "outputs" in xla:
        e["pass"] = all(e[k] <= max(TOLERANCE[name], 2 * xla[k]) for k in ("outputs", "gradients"))
    out[name] = {"tolerance": TOLERANCE[name], **errors}
  return out


def ssd_check(sizes, platform: str, deadline: float) -> dict:
  B, L, H, P, N, Q = sizes
  rng = np.random.default_rng(0)
  raw = {"x": rng.normal(size=(B, L, H, P)), "dt": np.logaddexp(0.0, rng.normal(size=(B, L, H)) - 2.0),
         "A": -rng.uniform(0.1, 1.0, size=(H,)), "B": rng.normal(size=(B, L, 1, N)) / 4,
         "C": rng.normal(size=(B, L, 1, N)) / 4, "S0": rng.normal(size=(B, H, P, N))}
  seg_BL = jnp.asarray(packed_segments(B, L))
  w_y = jnp.asarray(rng.normal(size=(B, L, H, P)), jnp.float32)
  w_s = jnp.asarray(rng.normal(size=(B, H, P, N)), jnp.float32)

  def make_args(dtype):  # x, B, C in the compute dtype; dt, A and the state stay float32, as in Mamba2
    return {k: jnp.asarray(v, dtype if k in ("x", "B", "C") else jnp.float32) for k, v in raw.items()}

  def loss_and_outputs(fn, a):
    y, s = fn(a["x"], a["dt"], a["A"], a["B"], a["C"], chunk_size=Q, segment_ids_BL=seg_BL,
              initial_state_BHPN=a["S0"])
    return jnp.sum(y.astype(jnp.float32) * w_y) + jnp.sum(s * w_s), (y, s)

  fns = {"xla": ssd_chunked}
  if platform == "cpu":  # both kernels in Pallas interpret mode: the CI smoke run
    fns["pallas_tpu_interpret"] = functools.partial(ssd_pallas, backend="tpu", interpret=True)
    fns["pallas_gpu_interpret"] = functools.partial(ssd_pallas, backend="gpu", interpret=True)
  else:
    fns["pallas"] = ssd_pallas
  return {"shape": {"B": B, "L": L, "H": H, "P": P, "N": N, "chunk": Q},
          **_compare(fns, make_args, loss_and_outputs, deadline)}


def attention_check(sizes, platform: str, deadline: float) -> dict:
  B, L, H, K = sizes
  rng = np.random.default_rng(1)
  raw = {k: rng.normal(size=(B, L, H, K)) for k in "qkv"}
  seg_BL = jnp.asarray(packed_segments(B, L))
  w_o = jnp.asarray(rng.normal(size=(B, L, H, K)), jnp.float32)
  keep_BL11 = (seg_BL > 0)[:, :, None, None]  # padding rows attend to padding only: not compared

  def make_args(dtype):
    return {k: jnp.asarray(v, dtype) for k, v in raw.items()}

  def loss_and_outputs(fn, a):
    o = jnp.where(keep_BL11, fn(a["q"], a["k"], a["v"], seg_BL).astype(jnp.float32), 0.0)
    return jnp.sum(o * w_o), o

  def dense(q, k, v, seg, implementation):  # the model's dense-mask path (hnet.layers.attention)
    return dense_attention(q, k, v, attention_mask(seg), implementation=implementation)

  fns = {"xla": functools.partial(dense, implementation="xla")}
  if platform == "gpu":
    fns["cudnn"] = functools.partial(dense, implementation="cudnn")
  else:  # TPU: the splash kernel; CPU: the same kernel interpreted
    fns["splash"] = functools.partial(splash.splash_attention, interpret=platform == "cpu")
  out = {"shape": {"B": B, "L": L, "H": H, "K": K}, **_compare(fns, make_args, loss_and_outputs, deadline)}
  if platform == "gpu":  # did cuDNN's fused kernel run, or did XLA's attention stand in for it?
    try:
      args = make_args(jnp.bfloat16)
      hlo = jax.jit(fns["cudnn"]).lower(args["q"], args["k"], args["v"], seg_BL).compile().as_text()
      out["cudnn_attention_calls"] = aot.cudnn_attention_calls(hlo)
    except Exception as e:  # pylint: disable=broad-except
      out["cudnn_attention_calls"] = _error(e)
  return out


def kernels(variant: str, deadline: float, entries: list[str] | None = None) -> dict:
  platform = jax.devices()[0].platform
  sizes = SIZES[variant]
  out = {}
  for name, check in (("ssd", ssd_check), ("attention", attention_check)):
    if entries and name not in entries:
      continue
    try:
      out[name] = check(sizes[name], platform, deadline)
    except Exception as e:  # pylint: disable=broad-except
      out[name] = {"error": _error(e), "traceback": traceback.format_exc()[-2000:]}
  return out


# --------------------------------------------------------------------------- 3. speed

def default_batch(variant: str) -> int:
  """Rows per step: 16 where the device has the memory (the fit table puts H-Net 1-stage L at 36 GB), else 8."""
  if variant == "tiny":
    return 4
  limit = (jax.devices()[0].memory_stats() or {}).get("bytes_limit", 0)
  return 16 if limit >= 60 * 2**30 else 8


SPEED_ENTRIES = ("hnet_1stage_L", "flat_equal_flops", "mamba2_stack_xla", "mamba2_stack_pallas")


def speed(variant: str, batch: int, steps: int, deadline: float, entries: list[str] | None = None) -> dict:
  configs = train_step.suite_configs(batch, "tiny" if variant == "tiny" else None)
  # H-Net first: the device's peak-memory counter then reads its step alone (part 4).
  order = [name for name in SPEED_ENTRIES if not entries or name in entries]
  limit = (jax.devices()[0].memory_stats() or {}).get("bytes_limit")
  entries = {}
  for name in order:
    if time.monotonic() > deadline:
      entries[name] = {"skipped": "time box"}
      continue
    t0 = time.monotonic()
    try:
      entries[name] = train_step.run(copy.deepcopy(configs[name]), steps, warmup=2 if variant != "tiny" else 1,
                                     fit_bytes=int(0.9 * limit) if limit else None)
    except Exception as e:  # pylint: disable=broad-except
      entries[name] = {"error": _error(e), "traceback": traceback.format_exc()[-2000:]}
    entries[name]["wall_s"] = time.monotonic() - t0
    if entries[name].get("peak_memory_gib") and name != order[0]:  # the counter never resets: a bound only
      entries[name]["process_peak_memory_gib"] = entries[name].pop("peak_memory_gib")
    print(f"  {name}: {_speed_line(entries[name])}", flush=True)
  out = {"entries": entries}
  hnet, flat = entries.get("hnet_1stage_L", {}), entries.get("flat_equal_flops", {})
  if "bytes_per_s" in hnet and "bytes_per_s" in flat:
    out["hnet_over_flat_bytes_per_s"] = hnet["bytes_per_s"] / flat["bytes_per_s"]
    out["hnet_over_flat_fwd_flops_per_byte"] = hnet["fwd_flops_per_byte"] / flat["fwd_flops_per_byte"]
  return out


def _speed_line(r: dict) -> str:
  if "bytes_per_s" not in r:
    return r.get("error") or r.get("skipped", "?")
  mfu = f"{r['mfu']:.3f}" if r.get("mfu") is not None else "n/a"
  return (f"batch {r['batch']}, {r['step_time_s'] * 1e3:.1f} ms/step, {r['bytes_per_s']:,.0f} bytes/s, MFU {mfu}, "
          f"compile {r['compile_s']:.0f} s")


# --------------------------------------------------------------------------- 4. memory truth

def fit_table_prediction(config: str, batch: int, seq_len: int) -> dict | None:
  """The committed `--aot` prediction (deviceless, one GPU) for this config and batch, if the table has it."""
  try:
    with open(FIT_TABLE, encoding="utf-8") as f:
      table = json.load(f)
  except OSError:
    return None
  for c in table.get("compiles", []):
    if (c["config"], c["batch_size"], c["seq_len"], c["devices"]) == (config, batch, seq_len, 1):
      return {"target": c["target"], "total_bytes": c["total_bytes"], "date": table.get("date"),
              "jax": table.get("jax")}
  return None


def memory_truth(speed_part: dict) -> dict:
  r = speed_part.get("entries", {}).get("hnet_1stage_L", {})
  if "step_time_s" not in r:
    return {"skipped": "the H-Net 1-stage L step did not run"}
  measured = r["peak_memory_gib"] and r["peak_memory_gib"] * 2**30
  out = {"config": "hnet_1stage_L", "batch": r["batch"], "seq_len": r["seq_len"],
         "measured_peak_bytes": measured, "planned_bytes_same_compile": r["planned_memory_gib"] * 2**30}
  if measured:
    out["measured_over_planned"] = measured / out["planned_bytes_same_compile"]
  table = fit_table_prediction("hnet_1stage_L", r["batch"], r["seq_len"])
  if table:
    out["fit_table"] = table
    if measured:
      out["measured_over_fit_table"] = measured / table["total_bytes"]
  if not measured:
    out["note"] = "the device reports no memory statistics (CPU): nothing measured"
  return out


# --------------------------------------------------------------------------- 5. generation

def generation_speed(variant: str, deadline: float) -> dict:
  c = hnet_1stage_L.get_config("tiny" if variant == "tiny" else None)
  model = HNetLM(model_config_from_dict(c.model), rngs=nnx.Rngs(params=0))
  length = SIZES[variant]["gen_length"]
  new = length - 1 - len(generation.PROMPT)
  rows = []
  for batch in (1, 16):
    if time.monotonic() > deadline:
      rows.append({"batch": batch, "skipped": "time box"})
      continue
    try:
      first, best, _ = generation.cached(model, batch, length, repeats=1)
      rows.append({"batch": batch, "new_bytes": new, "compile_and_first_s": first, "best_s": best,
                   "bytes_per_s": batch * new / best, "ms_per_step": 1e3 * best / new})
    except Exception as e:  # pylint: disable=broad-except
      rows.append({"batch": batch, "error": _error(e)})
  return {"config": "hnet_1stage_L" + (":tiny" if variant == "tiny" else ""), "length": length,
          "note": "random parameters, greedy, one jitted scan over all new bytes (hnet.model.generate)", "rows": rows}


# --------------------------------------------------------------------------- summary

def summary(data: dict) -> str:
  env = data["parts"].get("environment", {})
  lines = [f"## bench.accelerator: {env.get('device', '?')} x{env.get('device_count', '?')}, "
           f"jax {env.get('versions', {}).get('jax', '?')}, {data.get('date')}", ""]
  k = data["parts"].get("kernels", {})
  if k:
    lines += ["| kernel | dtype | impl | outputs rel. err | gradients rel. err | pass |", "|---|---|---|---:|---:|---|"]
    for kernel in ("ssd", "attention"):
      for dtype in ("float32", "bfloat16"):
        for impl, e in k.get(kernel, {}).get(dtype, {}).items():
          if impl == "tolerance":
            continue
          if "outputs" in e:
            lines.append(f"| {kernel} | {dtype} | {impl} | {e['outputs']:.2e} | {e['gradients']:.2e} | "
                         f"{e.get('pass', 'reference')} |")
          else:
            lines.append(f"| {kernel} | {dtype} | {impl} | {e.get('error') or e.get('skipped')} | | |")
      if "error" in k.get(kernel, {}):
        lines.append(f"| {kernel} | | | {k[kernel]['error']} | | |")
    if "cudnn_attention_calls" in k.get("attention", {}):
      lines.append(f"\ncuDNN fused-attention calls in the compiled `cudnn` program: "
                   f"{k['attention']['cudnn_attention_calls']}")
    lines.append("")
  s = data["parts"].get("speed", {})
  if s:
    lines += ["| entry | batch x bytes | step ms | bytes/s | MFU | peak GiB | planned GiB | compile s |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in s.get("entries", {}).items():
      if "bytes_per_s" in r:
        mfu = f"{r['mfu']:.3f}" if r.get("mfu") is not None else "n/a"
        peak = (f"{r['peak_memory_gib']:.1f}" if r.get("peak_memory_gib") else
                f"<= {r['process_peak_memory_gib']:.1f}" if r.get("process_peak_memory_gib") else "n/a")
        lines.append(f"| {name} | {r['batch']} x {r['seq_len']} | {r['step_time_s'] * 1e3:.1f} | "
                     f"{r['bytes_per_s']:,.0f} | {mfu} | {peak} | {r['planned_memory_gib']:.1f} | "
                     f"{r['compile_s']:.0f} |")
      else:
        lines.append(f"| {name} | {r.get('error') or r.get('skipped')} | | | | | | |")
    if "hnet_over_flat_bytes_per_s" in s:
      lines.append(f"\nH-Net 1-stage L bytes/s over the equal-FLOPs flat model's: "
                   f"{s['hnet_over_flat_bytes_per_s']:.2f} (FLOPs/byte ratio "
                   f"{s['hnet_over_flat_fwd_flops_per_byte']:.2f})")
    lines.append("")
  m = data["parts"].get("memory", {})
  if m.get("measured_peak_bytes"):
    line = (f"Memory truth ({m['config']}, batch {m['batch']}): measured peak {m['measured_peak_bytes'] / 1e9:.2f} GB, "
            f"XLA's plan {m['planned_bytes_same_compile'] / 1e9:.2f} GB (x{m['measured_over_planned']:.2f})")
    if "fit_table" in m:
      line += (f", fit table ({m['fit_table']['target']}, deviceless) {m['fit_table']['total_bytes'] / 1e9:.2f} GB "
               f"(x{m['measured_over_fit_table']:.2f})")
    lines += [line, ""]
  g = data["parts"].get("generation", {})
  for r in g.get("rows", []):
    if "bytes_per_s" in r:
      lines.append(f"Generation {g['config']}, batch {r['batch']}: {r['bytes_per_s']:,.0f} bytes/s "
                   f"({r['ms_per_step']:.2f} ms per step, compile + first run {r['compile_and_first_s']:.0f} s)")
    else:
      lines.append(f"Generation {g['config']}, batch {r['batch']}: {r.get('error') or r.get('skipped')}")
  if data.get("stopped"):
    lines.append(f"\nStopped early: {data['stopped']}")
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--variant", choices=["full", "tiny"], default="full",
                      help="'tiny': every part at toy sizes, CPU in under a minute (CI)")
  parser.add_argument("--out_dir", default=os.path.join(os.path.dirname(__file__), "results"))
  parser.add_argument("--budget_s", type=float, default=None,
                      help="the watchdog saves and exits after this many seconds (default: the parts' boxes summed)")
  parser.add_argument("--batch", type=int, default=None, help="rows per training step (default: chosen to fit)")
  parser.add_argument("--steps", type=int, default=None, help="timed training steps per entry (default 10; tiny 2)")
  parser.add_argument("--parts", nargs="+", default=list(BUDGETS_S), choices=list(BUDGETS_S))
  parser.add_argument("--entries", nargs="+", choices=("ssd", "attention") + SPEED_ENTRIES,
                      help="only these kernel checks and speed entries (default: all)")
  args = parser.parse_args(argv)

  device = jax.devices()[0]
  date = datetime.date.today().isoformat()
  suffix = "_tiny" if args.variant == "tiny" else ""
  results = Results(os.path.join(args.out_dir, f"accelerator_{device_slug(device)}_{date}{suffix}.json"))
  results.data.update(date=date, variant=args.variant, command=" ".join(["python -m bench.accelerator"] +
                                                                         (argv if argv is not None else sys.argv[1:])))
  start = time.monotonic()
  budget = args.budget_s or sum(BUDGETS_S[p] for p in args.parts)

  def watchdog():
    results.data["stopped"] = f"watchdog after {budget:.0f} s; parts not finished are missing"
    results.save()
    print(summary(results.data), flush=True)
    print(f"wrote {results.path}", flush=True)
    os._exit(3)  # pylint: disable=protected-access  (a compile in the main thread cannot be interrupted)

  timer = threading.Timer(budget, watchdog)
  timer.daemon = True
  timer.start()

  box_end = start
  for part in args.parts:
    box_end = max(box_end, time.monotonic()) + BUDGETS_S[part]  # unused time carries to the next part
    t0 = time.monotonic()
    print(f"[{t0 - start:5.0f} s] {part}", flush=True)
    try:
      if part == "environment":
        out = environment()
      elif part == "kernels":
        out = kernels(args.variant, box_end, args.entries)
      elif part == "speed":
        batch = args.batch or default_batch(args.variant)
        out = speed(args.variant, batch, args.steps or (2 if args.variant == "tiny" else 10), box_end, args.entries)
      elif part == "memory":
        out = memory_truth(results.data["parts"].get("speed", {}))
      else:
        out = generation_speed(args.variant, box_end)
    except Exception as e:  # pylint: disable=broad-except  (one broken part must not cost the others)
      out = {"error": _error(e), "traceback": traceback.format_exc()[-2000:]}
    out["wall_s"] = time.monotonic() - t0
    results.data["parts"][part] = out
    results.save()
  timer.cancel()
  results.data["total_s"] = time.monotonic() - start
  results.save()
  print(summary(results.data), flush=True)
  print(f"wrote {results.path}", flush=True)
  return results


if __name__ == "__main__":
  main()
