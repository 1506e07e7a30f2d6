"""Will it fit? The largest power-of-two global batch of each paper config per accelerator target.

  python -m bench.will_it_fit                                   # the README table (hours on 2 CPU cores)
  python -m bench.will_it_fit --configs hnet_1stage_L --targets v5p-8 h100

Every cell is `train.py --aot` (hnet/train/aot.py): the exact training step at 8192-byte rows, fsdp over
every device of the target, compiled ahead of time on this CPU host. The search compiles one row
per device, then aims at the largest power of two that a line through the compiles so far says
fits, until the largest fitting power of two and the next one up (which does not) were both
compiled (or 256 rows per device fit); every batch in the table was compiled, none extrapolated.
`--resume` keeps the finished cells of an earlier --out; `--table A.json B.json` prints the README table. GPU targets need jax's
CUDA plugin (`pip install -e ".[cuda]"`), TPU targets libtpu (`pip install "jax[tpu]"`).
Results: bench/results/will_it_fit.json (every compile) and a Markdown table on stdout.
"""
import argparse
import dataclasses
import datetime
import importlib
import json
import math
import os
import sys

import jax
import numpy as np

from hnet.train import accelerators, aot

CONFIGS = ("hnet_1stage_L", "hnet_1stage_XL", "hnet_2stage_L", "hnet_2stage_XL")
TARGETS = ("h100", "h100x8", "v5p-8", "v5e-8")
MAX_ROWS_PER_DEVICE = 256


def load_config(name: str, target: accelerators.Target, batch: int):
  c = importlib.import_module(f"hnet.configs.{name}").get_config()
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
  c.train.batch_size = batch
  c.train.grad_accum_steps = 1
  return c


def search(name: str, target: accelerators.Target, devices: list, log, earlier: list[dict] = ()) -> dict:
  """Compiles until the largest fitting power-of-two batch and the next one up are both known.

  `earlier`: compiles of an interrupted search (from --out), reused rather than repeated.
  """
  n = target.num_devices
  fields = {f.name for f in dataclasses.fields(aot.Report)} - {"target"}
  tried: dict[int, aot.Report] = {
      e["batch_size"] // n: aot.Report(target=target, **{k: v for k, v in e.items() if k in fields})
      for e in earlier if e["config"] == name and e["target"] == target.name}

  def compile_rows(rows: int) -> aot.Report:
    if rows not in tried:
      r = aot.compile_train_step(load_config(name, target, rows * n), target, devices)
      tried[rows] = r
      log({"config": name, **r.to_json()})
      print(f"  {name} {target.name} batch {rows * n}: {r.total_bytes / 1e9:.1f} GB "
            f"({'fits' if r.fits else 'over'}), compile {r.compile_seconds:.0f} s", file=sys.stderr, flush=True)
    return tried[rows]

  one = compile_rows(1)
  while one.fits:
    best = max(k for k, r in tried.items() if r.fits)
    over = min((k for k, r in tried.items() if not r.fits), default=2 * MAX_ROWS_PER_DEVICE)
    if over <= 2 * best or best >= MAX_ROWS_PER_DEVICE:
      break
    # Memory is close to linear in the rows per device: aim where a line through the compiles so far
    # meets the usable memory, kept strictly inside the bracket (best, over) so the search always narrows.
    rows_k = np.array(sorted(tried), float)
    bytes_k = np.array([tried[int(k)].total_bytes for k in rows_k], float)
    if len(rows_k) > 1:
      slope, icpt = np.polyfit(rows_k, bytes_k, 1)
    else:  # one point: all of its non-state memory counted per row (an over-estimate of the slope)
      slope, icpt = one.total_bytes - one.fixed_bytes, one.fixed_bytes
    aim = (target.usable_bytes - icpt) / max(slope, 1.0)
    rows = 2 ** int(math.log2(max(aim, 1.0)))
    rows = min(max(rows, 2 * best), over // 2)
    compile_rows(rows)
  best = max((k for k, r in tried.items() if r.fits), default=None)
  cell = {"config": name, "target": target.name, "devices": n, "usable_gb": target.usable_bytes / 1e9,
          "batch": best * n if best else None, "rows_per_device": best}
  if best:
    r = tried[best]
    cell.update(total_gb=r.total_bytes / 1e9, argument_gb=r.argument_bytes / 1e9, temp_gb=r.temp_bytes / 1e9,
                compile_s=r.compile_seconds, params=r.num_params)
  else:
    cell.update(total_gb=one.total_bytes / 1e9, compile_s=one.compile_seconds, params=one.num_params,
                advice=aot.advice(one))
  return cell


def table(cells: list[dict]) -> str:
  rows = ["| config | target | largest batch (8192-byte rows) | per-device memory | compile |",
          "|---|---|---|---|---|"]
  for c in cells:
    if "error" in c:
      rows.append(f"| {c['config']} | {c['target']} | compile error: {c['error'][:80]} | | |")
    elif c["batch"]:
      rows.append(f"| {c['config']} | {c['target']} | {c['batch']} ({c['rows_per_device']} per device) | "
                  f"{c['total_gb']:.1f} of {c['usable_gb']:.0f} GB | {c['compile_s']:.0f} s |")
    else:
      rows.append(f"| {c['config']} | {c['target']} | none: 1 row per device needs {c['total_gb']:.1f} GB | "
                  f"of {c['usable_gb']:.0f} GB | {c['compile_s']:.0f} s |")
  return "\n".join(rows)


def pivot(cells: list[dict]) -> str:
  """The README table: a row per config, a column per target; each cell batch (memory, compile)."""
  targets = list(dict.fromkeys(c["target"] for c in cells))
  configs = list(dict.fromkeys(c["config"] for c in cells))
  by = {(c["config"], c["target"]): c for c in cells}
  head = "| config | " + " | ".join(f"{t} ({_devices(cells, t)})" for t in targets) + " |"
  rows = [head, "|---|" + "---|" * len(targets)]
  for name in configs:
    out = []
    for t in targets:
      c = by.get((name, t))
      if c is None:
        out.append("not compiled yet")
      elif "error" in c:
        out.append("compile error")
      elif c["batch"]:
        out.append(f"**{c['batch']}** ({c['total_gb']:.1f} GB, {c['compile_s']:.0f} s)")
      else:
        out.append(f"none ({c['total_gb']:.1f} GB at 1 row)")
    rows.append(f"| {name} | " + " | ".join(out) + " |")
  return "\n".join(rows)


def _devices(cells: list[dict], target: str) -> str:
  n = next(c["devices"] for c in cells if c["target"] == target)
  gb = next(c["usable_gb"] for c in cells if c["target"] == target)
  return f"{n} x {gb:.0f} GB"


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--configs", nargs="+", default=CONFIGS)
  p.add_argument("--targets", nargs="+", default=TARGETS)
  p.add_argument("--out", default="bench/results/will_it_fit.json")
  p.add_argument("--resume", action="store_true", help="keep the finished cells of --out")
  p.add_argument("--table", nargs="+", metavar="JSON", help="print the README table of these results and exit")
  args = p.parse_args()
  if args.table:
    cells = []
    for path in args.table:
      with open(path, encoding="utf-8") as f:
        cells += json.load(f)["cells"]
    print(pivot(cells))
    return
  targets = [accelerators.parse(t) for t in args.targets]
  if any(t.platform == "cuda" for t in targets):
    accelerators.prepare_gpu_compiles()
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  compiles, cells = [], []
  if args.resume and os.path.exists(args.out):
    with open(args.out, encoding="utf-8") as f:
      earlier = json.load(f)
    compiles, cells = earlier["compiles"], [c for c in earlier["cells"] if "error" not in c]
  done = {(c["config"], c["target"]) for c in cells}

  def save():
    with open(args.out, "w", encoding="utf-8") as f:
      json.dump({"date": datetime.date.today().isoformat(), "jax": jax.__version__, "host": "CPU, ahead of time",
                 "seq_len": 8192, "mesh": "fsdp over every device", "cells": cells, "compiles": compiles}, f, indent=1)

  def log(entry: dict) -> None:
    compiles.append(entry)
    save()  # every compile: an interrupted search resumes (--resume) without repeating it

  for target in targets:
    devices = accelerators.devices(target)
    for name in args.configs:
      if (name, target.name) in done:
        continue
      try:
        cells.append(search(name, target, devices, log, earlier=list(compiles)))
      except Exception as e:  # pylint: disable=broad-except  (a compiler error is a result too)
        error = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        print(f"  {name} {target.name}: compile error: {error}", file=sys.stderr, flush=True)
        cells.append({"config": name, "target": target.name, "devices": target.num_devices, "batch": None,
                      "usable_gb": target.usable_bytes / 1e9, "error": error})
      save()
  print(table(cells))


if __name__ == "__main__":
  main()
