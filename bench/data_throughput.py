"""Packed bytes/s of the training input pipeline (hnet/data/pipeline.py) on this host.

  python -m bench.data_throughput                      # builtin corpus, default settings below
  python -m bench.data_throughput --settings 1024x64 --workers 0 --seconds 20

"Packed bytes" are the B x L input positions of each batch (what the model consumes);
"target bytes" are the positions with loss_mask 1 (real next bytes, padding excluded).
Each setting is timed after a warm-up that fills the first shuffle window. "MB per CPU s"
divides by the CPU time of this process and its grain workers instead of wall time: what
the pipeline delivers per dedicated core, unaffected by other load on a shared machine.
"""
import argparse
import os
import platform
import time

from hnet.configs.base import get_config
from hnet.data import pipeline


def _cpu_seconds() -> float:
  """CPU time of this process (all threads) and its live child processes (grain workers)."""
  def cpu(stat_path):
    with open(stat_path, encoding="ascii") as f:
      fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), int(fields[1])
  total, me = cpu("/proc/self/stat")[0], os.getpid()
  for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
      t, ppid = cpu(f"/proc/{pid}/stat")
    except OSError:  # exited meanwhile
      continue
    if ppid == me:
      total += t
  return total


def measure(data_cfg, *, batch_size: int, seconds: float, warmup: float) -> dict:
  it = pipeline.make_train_iterator(data_cfg, global_batch_size=batch_size, seed=0, process_index=0,
                                    process_count=1)
  t0 = time.perf_counter()
  next(it)
  first = time.perf_counter() - t0
  while time.perf_counter() - t0 < warmup:
    next(it)
  packed = targets = 0
  t0, cpu0 = time.perf_counter(), _cpu_seconds()
  while time.perf_counter() - t0 < seconds:
    batch = next(it)
    packed += batch["inputs"].size
    targets += int(batch["loss_mask"].sum())
  dt, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
  it.close()
  return {"packed_mb_s": packed / dt / 1e6, "target_mb_s": targets / dt / 1e6, "fill": targets / packed,
          "mb_per_cpu_s": packed / cpu / 1e6, "first_batch_s": first}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--dataset", default="builtin")
  parser.add_argument("--text_paths", default="")
  parser.add_argument("--data_dir", default="")
  parser.add_argument("--settings", nargs="+", default=["256x16", "256x256", "8192x8"],
                      help="LxB: seq_len x rows per batch (one host)")
  parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
  parser.add_argument("--seconds", type=float, default=10.0)
  parser.add_argument("--warmup", type=float, default=3.0)
  args = parser.parse_args()

  c = get_config().data
  c.dataset, c.text_paths, c.data_dir = args.dataset, args.text_paths, args.data_dir
  t0 = time.perf_counter()
  stats = pipeline.prepare(c)
  print(f"prepared {stats['dataset']} in {time.perf_counter() - t0:.1f}s: {stats['splits']}")
  import grain  # pylint: disable=import-outside-toplevel
  print(f"host: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; "
        f"grain {grain.__version__}, python {platform.python_version()}")
  print("| seq_len | batch | workers | packed MB/s | target MB/s | fill | packed MB per CPU s | first batch s | "
        "load avg |")
  print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
  for setting in args.settings:
    L, B = map(int, setting.split("x"))
    for w in args.workers:
      c.seq_len, c.worker_count = L, w
      r = measure(c, batch_size=B, seconds=args.seconds, warmup=args.warmup)
      print(f"| {L} | {B} | {w} | {r['packed_mb_s']:.1f} | {r['target_mb_s']:.1f} | {r['fill']:.3f} | "
            f"{r['mb_per_cpu_s']:.1f} | {r['first_batch_s']:.2f} | {os.getloadavg()[0]:.1f} |", flush=True)


if __name__ == "__main__":
  main()
