"""Packed bytes/s of the training input pipeline (hnet/data/pipeline.py) on this host.

  python -m bench.data_throughput                      # builtin corpus, L in (256, 8192), workers in (0, 2)
  python -m bench.data_throughput --seq_len 1024 --workers 0 --seconds 20

"Packed bytes" are the B x L input positions of each batch (what the model consumes);
"target bytes" are the positions with loss_mask 1 (real next bytes, padding excluded).
Each setting is timed after a warm-up that fills the first shuffle window.
"""
import argparse
import os
import platform
import time

from configs.base import get_config
from hnet.data import pipeline


def measure(data_cfg, *, batch_size: int, seconds: float, warmup: float) -> dict:
  it = pipeline.make_train_iterator(data_cfg, global_batch_size=batch_size, seed=0, process_index=0,
                                    process_count=1)
  t0 = time.perf_counter()
  next(it)
  first = time.perf_counter() - t0
  while time.perf_counter() - t0 < warmup:
    next(it)
  packed = targets = 0
  t0 = time.perf_counter()
  while time.perf_counter() - t0 < seconds:
    batch = next(it)
    packed += batch["inputs"].size
    targets += int(batch["loss_mask"].sum())
  dt = time.perf_counter() - t0
  it.close()
  return {"packed_mb_s": packed / dt / 1e6, "target_mb_s": targets / dt / 1e6, "fill": targets / packed,
          "first_batch_s": first}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--dataset", default="builtin")
  parser.add_argument("--text_paths", default="")
  parser.add_argument("--data_dir", default="")
  parser.add_argument("--seq_len", type=int, nargs="+", default=[256, 8192])
  parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
  parser.add_argument("--batch_rows", type=int, default=65536, help="rows x L per batch, in bytes")
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
  print("| seq_len | batch | workers | packed MB/s | target MB/s | fill | first batch s |")
  print("|---:|---:|---:|---:|---:|---:|---:|")
  for L in args.seq_len:
    for w in args.workers:
      c.seq_len, c.worker_count = L, w
      B = max(1, args.batch_rows // L)
      r = measure(c, batch_size=B, seconds=args.seconds, warmup=args.warmup)
      print(f"| {L} | {B} | {w} | {r['packed_mb_s']:.1f} | {r['target_mb_s']:.1f} | {r['fill']:.3f} | "
            f"{r['first_batch_s']:.2f} |", flush=True)


if __name__ == "__main__":
  main()
