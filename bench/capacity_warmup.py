"""Does a capacity warm-up help H-Net at the paper's routing settings? Three short runs, one table.

  python -m bench.capacity_warmup [--steps 300] [--workdir runs/capacity_warmup]

H-Net 1-stage (configs/hnet_1stage.py, CPU-small) with the paper's N = 6 and slack 1.25 on
512-byte rows, 8 rows a step. A freshly initialised router proposes about half of the bytes as
boundaries, so the capacity drops most of them until the ratio loss pulls the rate toward 1/6.
Arms: `cap` slack 1.25 throughout; `nocap` slack 6 (capacity = L: nothing is ever dropped, about
5x the inner compute); `warmup` slack 6 for the first third of the steps, then 1.25 (resumed from
the checkpoint: parameters do not depend on the capacity). Same data order in every arm. Writes
bench/results/capacity_warmup_cpu.json (overflow and boundary fraction over steps, final
validation bits/byte on 32 batches).
"""
import argparse
import importlib
import json
import os

from hnet.train import trainer

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def config(slack: float, steps: int):
  c = importlib.import_module("hnet.configs.hnet_1stage").get_config()
  c.model.target_ratio, c.model.capacity_slack = (6.0,), slack
  c.data.seq_len, c.train.batch_size, c.train.num_steps = 512, 8, steps
  c.train.log_every, c.train.eval_every, c.train.eval_batches, c.train.full_final_eval = 10, steps, 32, False
  c.ckpt.every = 10 * steps
  return c


def summary(workdir: str) -> dict:
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8")]
  train = [r for r in rows if "train/loss" in r]
  final = [r for r in rows if "eval/bits_per_byte" in r][-1]
  return {"steps": [r["step"] for r in train],
          "overflow_frac": [round(r["train/stage0/overflow_frac"], 4) for r in train],
          "boundary_frac": [round(r["train/stage0/boundary_frac"], 4) for r in train],
          "train_bits_per_byte": [round(r["train/bits_per_byte"], 4) for r in train],
          "eval_bits_per_byte": final["eval/bits_per_byte"],
          "eval_bytes_per_chunk": final["eval/stage0/bytes_per_chunk"]}


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--steps", type=int, default=300)
  p.add_argument("--workdir", default="runs/capacity_warmup")
  args = p.parse_args()
  arms = {}
  for name, slack in (("cap", 1.25), ("nocap", 6.0)):
    trainer.train_and_evaluate(config(slack, args.steps), os.path.join(args.workdir, name), progress=False)
  warm = os.path.join(args.workdir, "warmup")
  trainer.train_and_evaluate(config(6.0, args.steps), warm, progress=False, stop_after=args.steps // 3)
  trainer.train_and_evaluate(config(1.25, args.steps), warm, progress=False)
  for name in ("cap", "nocap", "warmup"):
    arms[name] = summary(os.path.join(args.workdir, name))
    print(f"{name}: validation {arms[name]['eval_bits_per_byte']:.4f} bits/byte, "
          f"{arms[name]['eval_bytes_per_chunk']:.2f} bytes/chunk")
  os.makedirs(RESULTS, exist_ok=True)
  with open(os.path.join(RESULTS, "capacity_warmup_cpu.json"), "w", encoding="utf-8") as f:
    json.dump({"steps": args.steps, "arms": arms}, f, indent=1)


if __name__ == "__main__":
  main()
