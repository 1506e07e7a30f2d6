"""Matched-compute study: every family trained on the same bytes at equal training FLOPs per byte.

  python -m experiments.study                       # the CPU study (about 15 min a run on 2 cores), resumable
  python -m experiments.study --variant tiny        # smoke run of all 13 trainings: :tiny configs, 3 steps;
                                                    # minutes, not seconds: 220 s of CPU (8 min wall on 2 busy cores)
  python -m experiments.study --variant tiny --only mrt5   # one of them (the test suite's): about 20 s
  python -m experiments.study --only default flat   # some runs only
  python -m experiments.study --report              # table, JSON and plot from finished runs only

Finished runs' results and metrics are archived in experiments/results/study_<variant>_runs/ (commit
them): a study continued on a fresh machine restores them and trains only what is missing. The
tiny variant writes its results and archive under its work dir instead (runs/study_tiny/results:
ignored by git) and compiles without XLA's expensive optimisations, as the test suite does.

A report is a function of the finished runs: its `date` is the day the last of them finished
(`finished` in each result.json), its `machine` and `jax` those the runs were trained with, so a
report of unchanged runs rewrites the committed JSON byte for byte (runs archived before those
fields existed keep the values of the report already there).

Every run reads the same data in the same order (same seed, rows, batch size, steps) and uses
one optimiser recipe (the `default` config's: AdamW, lr 5e-3, warmup-stable-decay with a 50%
cool-down; hierarchical families get H-Net's per-stage lr rule). Each family's widths are scaled
so that its training FLOPs per byte (`flops_per_byte(train=True)`, capacity basis: inner stages at
their static capacity, what the hardware computes) is within ±10% of the target; an ablation
changes one setting of its family's sized model (same widths, FLOPs reported). Runs are
resumable (a finished run is skipped, an interrupted one resumes from its checkpoint) and live
in one work dir each under --workdir. Per run: full-split validation bits/byte, the noise suite
(Δ bits/byte of a clean continuation after a noised context, per perturbation and the mean),
bytes per chunk per stage against the target, capacity overflow, wall time, bytes/s,
parameters, FLOPs/byte (capacity and target bases). Results: experiments/results/study_<variant>.json,
a markdown table, and experiments/results/study_<variant>.png (validation bits/byte against training
FLOPs, from each run's periodic evaluations).
"""
# pylint: disable=invalid-name
import argparse
import dataclasses
import datetime
import importlib
import json
import logging
import math
import os
import platform
import shutil
import time

import jax
import numpy as np

from hnet.config import model_config_from_dict
from hnet.model.flops import flops_per_byte
from hnet.train import trainer

log = logging.getLogger("experiments.study")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
ENTROPY_LM = "entropy_lm"  # blt's entropy LM: its work dir and archive dir name
TINY_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"  # tests/conftest.py's


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run: a family's config file, overrides, and its role in the study."""
  name: str
  config: str
  overrides: tuple = ()  # (dotted key, value)
  kind: str = "family"  # 'family', 'ablation' or 'long'
  note: str = ""


FAMILIES = (
    Run("flat", "flat", note="flat byte Transformer"),
    Run("hnet_1stage", "hnet_1stage", note="H-Net 1-stage, Mamba2 encoder/decoder"),
    Run("hnet_attn", "hnet_attn", note="H-Net 1-stage, local-attention encoder/decoder"),
    Run("hnet_2stage", "hnet_2stage", note="H-Net 2-stage"),
    Run("mrt5", "mrt5", note="MrT5 delete gate (hard deletion at eval)"),
    Run("word", "word", note="word chunks (SpaceByte/HAT)"),
    Run("stride", "stride", note="fixed stride 4 (MEGABYTE)"),
    Run("blt", "blt", note="BLT entropy patches"),
)
ABLATIONS = (  # on H-Net 1-stage (its family run uses capacity_slack 1.5, ratio-loss weight 0.03)
    Run("hnet_1stage-slack1.25", "hnet_1stage", (("model.capacity_slack", 1.25),), "ablation",
        "capacity slack 1.25 (the paper's)"),
    Run("hnet_1stage-slack4", "hnet_1stage", (("model.capacity_slack", 4.0),), "ablation",
        "capacity slack 4: nothing is ever dropped"),
    Run("hnet_1stage-ratio0.1", "hnet_1stage", (("opt.ratio_loss_weight", 0.1),), "ablation",
        "ratio-loss weight 0.1"),
    Run("hnet_1stage-stride", "hnet_1stage", (("model.router", "stride"),), "ablation",
        "same model, fixed stride 4 instead of the learned router"),
)
# Seeds and learning rates (issue 26): each of these families gets a 3-point lr sweep (one seed), then two
# more seeds at its best lr, so that a gap between families is stated only where it exceeds their spread.
SEEDED = ("flat", "stride", "word", "hnet_1stage")
RECIPE_LR = 5e-3  # the family runs' lr
SWEEP_LRS = (2.5e-3, 1e-2)  # with RECIPE_LR: the 3-point sweep
EXTRA_SEEDS = (1, 2)  # with seed 0 (the sweep's best run): 3 seeds


def sweep_runs() -> list[Run]:
  family = {r.name: r for r in FAMILIES}
  return [Run(f"{n}-lr{lr:g}", family[n].config, (("opt.lr", lr),), "lr", f"{family[n].note}, lr {lr:g}")
          for n in SEEDED for lr in SWEEP_LRS]


def seed_runs(best_lrs: dict[str, float]) -> list[Run]:
  """Seeds 1 and 2 of each family whose sweep is finished, at its best lr (init and data order both reseeded)."""
  family = {r.name: r for r in FAMILIES}
  return [Run(f"{n}-seed{s}", family[n].config, (("opt.lr", best_lrs[n]), ("seed", s)), "seed",
              f"{family[n].note}, seed {s}, lr {best_lrs[n]:g}")
          for n in SEEDED if n in best_lrs for s in EXTRA_SEEDS]


def sweep_members(name: str) -> dict[float, str]:
  """A seeded family's sweep: lr -> run name (the family run is the recipe's lr)."""
  return {RECIPE_LR: name, **{lr: f"{name}-lr{lr:g}" for lr in SWEEP_LRS}}


def best_lrs(finished: dict[str, dict]) -> dict[str, float]:
  """Each seeded family's best lr by full-split bits/byte, for families whose whole sweep is finished."""
  out = {}
  for n in SEEDED:
    members = sweep_members(n)
    if all(m in finished for m in members.values()):
      out[n] = min(members, key=lambda lr: finished[members[lr]]["bits_per_byte"])
  return out


def seed_group(name: str, finished: dict[str, dict]) -> list[dict]:
  """The finished runs of a seeded family at its best lr: seed 0 (from the sweep) and the extra seeds."""
  lr = best_lrs(finished).get(name)
  if lr is None:
    return []
  return [finished[n] for n in [sweep_members(name)[lr], *(f"{name}-seed{s}" for s in EXTRA_SEEDS)]
          if n in finished]


VARIANTS = {
    # steps of 8 rows x 256 bytes; target training FLOPs/byte (capacity basis); evals every `eval_every`
    "cpu": dict(steps=3000, batch=8, seq_len=256, target_mflops=1.5, eval_every=250, eval_batches=32,
                final_eval_batches=-1, long_factor=3, noise_items=256),  # final: the whole validation split
    "tiny": dict(steps=3, batch=8, seq_len=64, target_mflops=None, eval_every=3, eval_batches=1,
                 final_eval_batches=4, long_factor=2, noise_items=8),
}


# ---------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------
def _set(c, key: str, value) -> None:
  *parents, leaf = key.split(".")
  node = c
  for p in parents:
    node = node[p]
  node[leaf] = value


def _scaled(c, alpha: float) -> None:
  """Widths times alpha: d_model to a multiple of 16 (heads and Mamba2 head dims divide it), d_ff of 128."""
  base_d, base_f = tuple(c.model.d_model), tuple(c.model.d_ff)
  c.model.d_model = tuple(max(32, int(round(d * alpha / 16)) * 16) for d in base_d)
  c.model.d_ff = tuple(0 if f == 0 else max(128, int(round(f * alpha / 128)) * 128) for f in base_f)


def size_to_target(c, target_flops: float, tolerance: float = 0.10) -> float:
  """Scales the widths of `c` so its training FLOPs/byte lands nearest `target_flops`; returns the ratio."""
  base = c.copy_and_resolve_references()
  best = None
  for k in range(-80, 81):
    alpha = 1.02 ** k
    trial = base.copy_and_resolve_references()
    _scaled(trial, alpha)
    try:
      f = flops_per_byte(model_config_from_dict(trial.model), trial.data.seq_len, train=True)
    except ValueError:  # widths a layout cannot take (e.g. rotary dims)
      continue
    if best is None or abs(f / target_flops - 1) < abs(best[0] / target_flops - 1):
      best = (f, trial.model.d_model, trial.model.d_ff)
  f, c.model.d_model, c.model.d_ff = best
  if abs(f / target_flops - 1) > tolerance:
    raise ValueError(f"cannot size {c.model.layout} to {target_flops:.3g} FLOPs/byte within {tolerance:.0%} "
                     f"(closest {f:.3g})")
  return f / target_flops


def make_config(run: Run, variant: str, root: str):
  """The run's full config: the family file, the shared recipe, the run's overrides, the sizing."""
  v = VARIANTS[variant]
  c = importlib.import_module(f"hnet.configs.{run.config}").get_config("tiny" if variant == "tiny" else None)
  c.seed = 0
  c.data.seq_len, c.train.batch_size = v["seq_len"], v["batch"]
  c.train.num_steps = v["steps"] * (v["long_factor"] if run.kind == "long" else 1)
  c.train.log_every = min(50, c.train.num_steps)
  c.train.eval_every, c.train.eval_batches = v["eval_every"], v["eval_batches"]
  c.train.full_final_eval = variant != "tiny"
  c.ckpt.every = max(v["eval_every"], 1)
  c.ckpt.keep = 1
  c.opt.lr, c.opt.warmup_steps, c.opt.decay_fraction = 5e-3, min(100, c.train.num_steps // 10), 0.5
  c.opt.lr_multipliers = ()
  c.opt.lr_multiplier_rule = "none" if c.model.router == "none" else "hnet"
  c.eval.num_items = v["noise_items"]
  c.eval.bpb_batches = v["final_eval_batches"]
  c.eval.continuation_bytes = min(64, c.data.seq_len // 4)
  if c.model.router == "entropy":  # the study's own entropy LM and its calibrated θ
    c.model.entropy_model = os.path.join(root, ENTROPY_LM)
    lm = _finished(c.model.entropy_model)
    if lm is not None:
      c.model.entropy_threshold = lm["threshold"]
  if v["target_mflops"] is not None:
    size_to_target(c, v["target_mflops"] * 1e6)
  # Ablations change one thing of their family's sized model (its FLOPs/byte may move: reported).
  for key, value in run.overrides:
    _set(c, key, value)
  return c


def ensure_entropy_lm(variant: str, root: str, data_dir: str = "") -> dict:
  """Trains configs/entropy_lm.py for BLT once per study and calibrates θ for blt's target ratio.

  BLT trains its entropy model apart: its bytes are not part of the budget, its forward pass is
  part of blt's FLOPs/byte.
  """
  from hnet.tools import calibrate_entropy  # pylint: disable=import-outside-toplevel
  workdir = os.path.join(root, ENTROPY_LM)
  done = _finished(workdir)
  if done is not None:
    return done
  v = VARIANTS[variant]
  c = importlib.import_module("hnet.configs.entropy_lm").get_config("tiny" if variant == "tiny" else None)
  c.data.seq_len, c.train.batch_size, c.data.data_dir = v["seq_len"], v["batch"], data_dir
  if variant == "tiny":
    c.train.num_steps = v["steps"]
  log.info("training the entropy LM for blt in %s", workdir)
  out = trainer.train_and_evaluate(c, workdir, progress=False)
  blt = importlib.import_module("hnet.configs.blt").get_config("tiny" if variant == "tiny" else None)
  blt.data.seq_len, blt.train.batch_size, blt.data.data_dir = v["seq_len"], v["batch"], data_dir
  blt.model.entropy_model = workdir
  theta = calibrate_entropy.calibrate(blt, batches=2 if variant == "tiny" else 64)
  done = {"steps": c.train.num_steps, "bits_per_byte": out["eval"].get("bits_per_byte"), **theta}
  with open(os.path.join(workdir, "result.json"), "w", encoding="utf-8") as f:
    json.dump(done, f, indent=2)
  return done


# ---------------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------------
# What a finished run needs for the table and the plot, and its config (blt's entropy LM is sized from it).
ARCHIVED = ("result.json", "metrics.jsonl", "config.json")


def archive(workdir: str, archive_dir: str, restore: bool) -> None:
  """Copies a finished run's result and metrics to the archive kept in the repository (or back from it).

  Checkpoints stay in the work dir; the archive makes a long study survive a fresh machine.
  """
  src, dst = (archive_dir, workdir) if restore else (workdir, archive_dir)
  if not os.path.exists(os.path.join(src, "result.json")) or os.path.exists(os.path.join(dst, "result.json")):
    return
  os.makedirs(dst, exist_ok=True)
  for name in ARCHIVED:
    if os.path.exists(os.path.join(src, name)):  # runs archived before config.json was kept lack it
      shutil.copy(os.path.join(src, name), os.path.join(dst, name))


def _finished(workdir: str) -> dict | None:
  path = os.path.join(workdir, "result.json")
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  return None


def _train_metrics(workdir: str) -> tuple[list[dict], list[dict]]:
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8")]
  return [r for r in rows if "train/loss" in r], [r for r in rows if "eval/bits_per_byte" in r]


class Interrupted(Exception):
  """A run stopped before its last step (preemption); the study stops with it."""


def train_and_measure(run: Run, c, workdir: str, *, noise: bool = True) -> dict:
  """Trains (or resumes) the run, evaluates it, writes and returns `<workdir>/result.json`."""
  from hnet.evals import bpb, robustness  # pylint: disable=import-outside-toplevel
  from hnet.evals import documents  # pylint: disable=import-outside-toplevel
  from hnet.train import runs  # pylint: disable=import-outside-toplevel
  done = _finished(workdir)
  if done is not None:
    log.info("%s: finished earlier, skipped", run.name)
    return done
  start = time.time()
  out = trainer.train_and_evaluate(c, workdir, progress=False)
  wall = time.time() - start
  if out["stopped"]:  # SIGTERM / max_minutes: the checkpoint is saved, the run is not finished
    raise Interrupted(f"{run.name} stopped at step {out['step']} of {c.train.num_steps} ({out['stopped']}); "
                      "run the study again to resume it")
  model_cfg = model_config_from_dict(c.model)
  loaded = runs.load(workdir)
  final = bpb.evaluate(loaded)  # eval.bpb_batches: the whole split (exact) in the CPU study
  train_rows, _ = _train_metrics(workdir)
  rates = [r["train/bytes_per_second"] for r in train_rows if "train/bytes_per_second" in r]
  result = {
      "name": run.name, "kind": run.kind, "note": run.note, "config": run.config,
      "overrides": [list(o) for o in run.overrides],
      "layout": c.model.layout, "d_model": list(c.model.d_model), "d_ff": list(c.model.d_ff),
      "router": c.model.router, "target_ratio": list(c.model.target_ratio),
      "params": out["num_params"],
      "train_flops_per_byte": flops_per_byte(model_cfg, c.data.seq_len, train=True),
      "train_flops_per_byte_target_basis": flops_per_byte(model_cfg, c.data.seq_len, train=True, basis="target"),
      "steps": c.train.num_steps, "bytes_trained": c.train.num_steps * c.train.batch_size * c.data.seq_len,
      "wall_seconds_this_call": wall, "bytes_per_second_median": float(np.median(rates)) if rates else None,
      "bits_per_byte": final["bits_per_byte"], "target_bytes": final["target_bytes"],
      "stages": final["stages"],
  }
  if "soft" in final:
    result["bits_per_byte_soft"] = final["soft"]["bits_per_byte"]
  if noise:
    texts = documents.as_text(documents.load(c.data, limit=c.eval.num_documents))
    suite = robustness.evaluate(loaded, robustness.make_pairs(texts, loaded.config))
    result["noise"] = {t["perturbation"]: t["degradation"] for t in suite["tasks"]}
    result["noise_clean_bits_per_byte"] = suite["clean"]["bits_per_byte"]
    result["noise_mean_delta"] = float(np.mean(list(result["noise"].values())))
    result["noise_context"] = "cut before noising"  # runs without this field cut the noised context to the row
  result.update(finished_where())
  with open(os.path.join(workdir, "result.json"), "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)
  return result


def finished_where() -> dict:
  """When (UTC day) and where a run finished: what its report states."""
  return {"finished": datetime.datetime.now(datetime.timezone.utc).date().isoformat(),
          "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs", "jax": jax.__version__}


def provenance(results: list[dict], previous: dict | None) -> dict:
  """The report's date (the last run's finish), machine and jax, from the runs, not from the reporting machine.

  Runs that lack a field (archived before it was recorded) take it from the previous report of the same
  variant; with none, this machine's values stand in.
  """
  now, out = finished_where(), {}
  for key, field in (("date", "finished"), ("machine", "machine"), ("jax", "jax")):
    values = {r[field] for r in results if field in r}
    if any(field not in r for r in results) or not results:
      values.add((previous or {}).get(key) or now[field])
    out[key] = max(values) if key == "date" else " + ".join(sorted(values))
  return out


def curve(workdir: str, c) -> dict:
  """(training FLOPs so far, validation bits/byte) of a run: the periodic evaluations on the first
  `train.eval_batches` batches (`slice`) and, apart, the final one on the whole split (`full`)."""
  model_cfg = model_config_from_dict(c.model)
  flops_per_step = 3 * flops_per_byte(model_cfg, c.data.seq_len, train=True) * c.train.batch_size * c.data.seq_len
  _, evals = _train_metrics(workdir)
  points = [(r["step"] * flops_per_step, r["eval/bits_per_byte"]) for r in evals]
  if c.train.full_final_eval and evals and evals[-1]["step"] == c.train.num_steps:
    return {"slice": points[:-1], "full": points[-1]}
  return {"slice": points, "full": None}


def deletion_trace(workdir: str) -> dict:
  """A delete-gate run's deleted fraction: every logged training batch, and the validation slice at each
  periodic evaluation, as {"train": [(step, frac)], "validation": [(step, frac)]}."""
  train_rows, evals = _train_metrics(workdir)
  return {"train": [(r["step"], r["train/stage0/delete_frac"]) for r in train_rows
                    if "train/stage0/delete_frac" in r],
          "validation": [(r["step"], r["eval/stage0/delete_frac"]) for r in evals if "eval/stage0/delete_frac" in r]}


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
PAPER_NOISES = ("antspeak", "drop", "randomcase", "repeat", "uppercase")  # the H-Net and BLT papers' five
LABELS = {"blt": "blt (entropy router)"}  # what a family name would overclaim
FOOTNOTES = {
    "blt": "blt (entropy router): BLT's entropy patching (a frozen 0.5M-parameter byte LM, global threshold) "
           "on this code base's local-attention hierarchy; no hash n-gram embeddings, no cross-attention "
           "patch pooling, so not BLT's architecture.",
}


def label(name: str) -> str:
  """A run's name as the report shows it: the family's label, then the run's suffix (e.g. '-long')."""
  family = name.removesuffix("-long")
  return LABELS.get(family, family) + name[len(family):]


def noise_means(r: dict) -> tuple[float, float]:
  """Mean Δ bits/byte over the papers' five perturbations and over all of the suite's."""
  return float(np.mean([r["noise"][k] for k in PAPER_NOISES])), float(np.mean(list(r["noise"].values())))


def cut_before_noising(r: dict) -> bool:
  """Whether the run's noise suite scored every perturbation on the same clean content (the context cut
  before noising); older results, without `noise_context`, cut the noised context instead."""
  return "noise_context" in r


def shown_in_main_table(results: list[dict]) -> list[dict]:
  """Families, ablations and long runs; the lr sweeps and extra seeds have the seeds table."""
  return [r for r in results if r.get("kind") not in ("lr", "seed")]


def table(results: list[dict]) -> str:
  head = ("| run | params | forward MFLOP/byte (capacity / target) | bytes/chunk (target) | bits/byte | "
          "noise Δ (papers' 5 / all 7) | papers' 5 / clean | bytes/s |\n|---|---:|---:|---:|---:|---:|---:|---:|")
  lines = [head]
  for r in shown_in_main_table(results):
    chunk = " / ".join(f"{st['bytes_per_chunk']:.2f}" for st in r["stages"]) or "–"
    # Bytes per chunk are cumulative (bytes per stage-s chunk), so the targets are too: 2, 2 -> 2 / 4.
    target = " / ".join(f"{math.prod(r['target_ratio'][:s + 1]):g}" for s in range(len(r["stages"])))
    bpb = f"{r['bits_per_byte']:.4f}" + (f" (soft {r['bits_per_byte_soft']:.4f})" if "bits_per_byte_soft" in r else "")
    noise = "{:+.3f} / {:+.3f}".format(*noise_means(r)) if r.get("noise") else "–"
    relative = f"{noise_means(r)[0] / r['noise_clean_bits_per_byte']:+.1%}" if r.get("noise") else "–"
    rate = f"{r['bytes_per_second_median']:,.0f}" if r.get("bytes_per_second_median") else "–"
    lines.append(f"| {label(r['name'])} | {r['params']:,} | {r['train_flops_per_byte'] / 1e6:.2f} / "
                 f"{r['train_flops_per_byte_target_basis'] / 1e6:.2f} | {chunk}" + (f" ({target})" if target else "")
                 + f" | {bpb} | {noise} | {relative} | {rate} |")
  lines.append("\nFLOPs: forward model FLOPs per byte at the training shapes; a training step costs 3x that "
               "(forward + backward). Noise: Δ bits/byte of the clean continuation, the mean over the papers' "
               "five perturbations (" + ", ".join(PAPER_NOISES) + ") and over all seven; papers' 5 / clean: "
               "that mean relative to the clean continuation's bits/byte (a model that uses its context less "
               "loses less).")
  names = {r["name"].removesuffix("-long") for r in results}
  lines += [FOOTNOTES[n] for n in sorted(FOOTNOTES) if n in names]
  return "\n".join(lines)


def noise_table(results: list[dict]) -> str:
  """Δ bits/byte of the clean continuation after each perturbation of its context (eval.py noise), its means,
  and the papers' mean relative to the clean loss (a model that uses its context less loses less)."""
  scored = [r for r in shown_in_main_table(results) if r.get("noise")]
  if not scored:
    return ""
  kinds = [k for k in PAPER_NOISES if k in scored[0]["noise"]] + [k for k in scored[0]["noise"]
                                                                   if k not in PAPER_NOISES]
  lines = ["| run | clean bits/byte | " + " | ".join(kinds) + " | mean (papers' 5) | mean (all 7) | "
           "papers' 5 / clean |", "|---|---:|" + "---:|" * (len(kinds) + 3)]
  for r in scored:
    deltas = " | ".join(f"{r['noise'][k]:+.3f}" for k in kinds)
    five, seven = noise_means(r)
    mark = "" if cut_before_noising(r) else " †"
    lines.append(f"| {label(r['name'])}{mark} | {r['noise_clean_bits_per_byte']:.3f} | {deltas} | "
                 f"{five:+.3f} | {seven:+.3f} | {five / r['noise_clean_bits_per_byte']:+.1%} |")
  if not all(cut_before_noising(r) for r in scored):
    lines.append("\n† scored before the context was cut before noising: AntSpeak's and Repeat's noised "
                 "contexts were cut from the left to fit the row, so they held less of the text than the clean "
                 "context (their Δ mixes noise with lost context). Unmarked runs: every perturbation of the same "
                 "clean text (hnet/evals/robustness.py).")
  return "\n".join(lines)


def mean_sd(values: list[float], digits: int = 4, sign: str = "") -> str:
  """'mean ± sd' (sample sd, n - 1) with n; one value has no sd."""
  if not values:
    return "–"
  fmt = f"{{:{sign}.{digits}f}}"
  if len(values) == 1:
    return fmt.format(values[0]) + " (n=1)"
  return f"{fmt.format(np.mean(values))} ± {np.std(values, ddof=1):.{digits}f} (n={len(values)})"


def seeds_table(results: list[dict]) -> str:
  """The seeded families: the lr sweep (seed 0), then mean ± sd over the seeds at the best lr, and which
  gaps hold: a gap is stated only where the families' seed ranges do not overlap."""
  finished = {r["name"]: r for r in results}
  best = best_lrs(finished)
  lrs = sorted(sweep_members(SEEDED[0]))
  lines = ["| family | bits/byte at lr " + " / ".join(f"{lr:g}" for lr in lrs) + " (seed 0) | best lr | "
           "bits/byte over seeds | noise Δ papers' 5 | noise Δ all 7 | papers' 5 / clean |",
           "|---|---:|---:|---:|---:|---:|---:|"]
  groups = {}
  for n in SEEDED:
    members = sweep_members(n)
    if not any(m in finished for m in members.values()):
      continue
    sweep = " / ".join(f"{finished[members[lr]]['bits_per_byte']:.4f}" if members[lr] in finished else "–"
                       for lr in lrs)
    group = seed_group(n, finished)
    groups[n] = [g["bits_per_byte"] for g in group]
    # One noise basis: runs scored with the context cut before noising (earlier runs, marked †, are left out).
    noisy = [g for g in group if g.get("noise") and cut_before_noising(g)]
    lines.append(f"| {label(n)} | {sweep} | {best[n]:g} | " if n in best else f"| {label(n)} | {sweep} | – | ")
    lines[-1] += " | ".join([mean_sd(groups[n]), mean_sd([noise_means(g)[0] for g in noisy], 3, "+"),
                             mean_sd([noise_means(g)[1] for g in noisy], 3, "+"),
                             mean_sd([100 * noise_means(g)[0] / g["noise_clean_bits_per_byte"] for g in noisy],
                                     1, "+") + (" %" if noisy else "")]) + " |"
  if len(lines) == 2:
    return ""
  lines.append("\nsd: sample standard deviation over seeds (init and data order), at the family's best lr of the "
               "sweep; noise over the seeds scored with the context cut before noising (n says how many). Gaps in "
               "bits/byte between families with 3 seeds:")
  ranked = sorted((n for n, v in groups.items() if len(v) == len(EXTRA_SEEDS) + 1), key=lambda n: np.mean(groups[n]))
  for a, b in zip(ranked, ranked[1:]):
    gap = np.mean(groups[b]) - np.mean(groups[a])
    holds = max(groups[a]) < min(groups[b])
    lines.append(f"- {label(a)} ahead of {label(b)} by {gap:.4f}: " +
                 ("the seed ranges do not overlap, the gap holds" if holds else "the seed ranges overlap: a tie"))
  return "\n".join(lines)


def deletion_table(traces: dict[str, dict], targets: dict[str, float], since: int = 500) -> str:
  """The delete gate's deleted fraction over training at each evaluation, and its range over every logged
  training batch from step `since` on, against the target."""
  lines = []
  for name, trace in traces.items():
    train, validation = dict(trace["train"]), dict(trace["validation"])
    steps = [s for s in validation if s in train]
    late = [f for s, f in trace["train"] if s >= since]
    if not steps or not late:
      continue
    lines += [f"{name}: deleted fraction of bytes (target {targets[name]:.2f})", "",
              "| step | " + " | ".join(str(s) for s in steps) + " |", "|---|" + "---:|" * len(steps),
              "| training batch | " + " | ".join(f"{train[s]:.3f}" for s in steps) + " |",
              "| validation slice | " + " | ".join(f"{validation[s]:.3f}" for s in steps) + " |", "",
              f"From step {since} on, over all {len(late)} logged training batches: {min(late):.3f} to "
              f"{max(late):.3f} (target {targets[name]:.2f}, "
              f"largest gap {max(abs(f - targets[name]) for f in late):.3f}).",
              ""]
  return "\n".join(lines).rstrip()


def plot(curves: dict[str, dict], path: str, reference: float | None = None) -> None:
  """Two panels: the families (long runs dotted, in their family's colour); H-Net 1-stage and its ablations.
  A line joins one basis (the validation slice of the periodic evaluations); the final evaluation on the
  whole split is a separate star."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  ablations = {r.name for r in ABLATIONS}
  panels = (("families", lambda n: n not in ablations),
            ("H-Net 1-stage ablations", lambda n: n in ablations or n == ABLATIONS[0].config))
  panels = [(title, shown) for title, shown in panels if any(pts["slice"] and shown(n) for n, pts in curves.items())]
  # One colour per run over both panels; a long run takes its family's.
  tab20 = plt.get_cmap("tab20").colors
  palette = tab20[0::2] + tab20[1::2]  # the ten dark shades, then their light twins
  names = sorted({n.removesuffix("-long") for n in curves})
  colours = {n: palette[i % len(palette)] for i, n in enumerate(names)}
  fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5), sharey=True, squeeze=False)
  axes = axes[0]
  for ax, (title, shown) in zip(axes, panels):
    for name, pts in sorted(curves.items()):
      if not pts["slice"] or not shown(name):
        continue
      family = name.removesuffix("-long")
      x, y = zip(*pts["slice"])
      ax.plot(np.asarray(x) / 1e12, y, marker="o", markersize=3, label=label(name), color=colours[family],
              linestyle=":" if name != family else "-")
      if pts["full"] is not None:
        ax.plot(pts["full"][0] / 1e12, pts["full"][1], marker="*", markersize=9, color=colours[family],
                linestyle="none")
    if reference is not None:
      ax.axhline(reference, color="grey", linestyle="--", linewidth=1, label=f"xz -9e ({reference})")
    ax.set_xlabel("training FLOPs (TFLOP, 3 x forward, capacity basis)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  axes[0].set_ylabel("validation bits/byte (lines: a slice of the split; stars: the whole split)")
  fig.suptitle("Matched-compute study on the embedded corpus")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------
def plan(variant: str, only: list[str] | None, long_runs: list[str]) -> list[Run]:
  """Families, ablations, long runs and the lr sweeps; seed runs come later (they need the sweeps' results)."""
  runs = list(FAMILIES) + list(ABLATIONS)
  runs += [dataclasses.replace(next(r for r in FAMILIES if r.name == n), name=f"{n}-long", kind="long",
                               note=f"{VARIANTS[variant]['long_factor']}x the bytes")
           for n in long_runs]
  runs += sweep_runs()
  if only:
    known = [r.name for r in runs] + [r.name for r in seed_runs({n: RECIPE_LR for n in SEEDED})]
    unknown = set(only) - set(known)
    if unknown:
      raise ValueError(f"unknown runs {sorted(unknown)}; known: {known}")
    runs = [r for r in runs if r.name in only]
  return runs


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--variant", choices=sorted(VARIANTS), default="cpu")
  p.add_argument("--workdir", default=None, help="default runs/study_<variant>")
  p.add_argument("--only", nargs="*", help="run only these (names as in the table)")
  p.add_argument("--long", nargs="*", default=[], help="families to also train for long_factor x the bytes")
  p.add_argument("--no_noise", action="store_true", help="skip the noise suite")
  p.add_argument("--report", action="store_true", help="report finished runs only, train nothing")
  p.add_argument("--data_dir", default="", help="data.data_dir for every run")
  p.add_argument("--results", default=None, help="where the JSON and PNG go (default experiments/results; "
                 "tiny: <workdir>/results)")
  p.add_argument("--archive", default=None, help="finished runs' results and metrics are kept here and restored "
                 "from here (default experiments/results/study_<variant>_runs; 'none' for no archive)")
  args = p.parse_args(argv)
  root = os.path.abspath(args.workdir or os.path.join("runs", f"study_{args.variant}"))
  os.makedirs(root, exist_ok=True)
  if args.results is None:  # a smoke run leaves nothing for git to see
    args.results = os.path.join(root, "results") if args.variant == "tiny" else RESULTS
  if args.variant == "tiny" and TINY_XLA_FLAGS not in os.environ.get("XLA_FLAGS", ""):
    # Read when the backend starts (not yet, from the command line): compile fast.
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TINY_XLA_FLAGS}".strip()
  # A report shows every finished run, the long ones included, whatever --long says.
  long_runs = [r.name for r in FAMILIES] if args.report and not args.long else args.long
  runs = plan(args.variant, args.only, long_runs)
  archive_root = None if args.archive == "none" else (
      args.archive or os.path.join(args.results, f"study_{args.variant}_runs"))
  lm_workdir, lm_archive = os.path.join(root, ENTROPY_LM), archive_root and os.path.join(archive_root, ENTROPY_LM)
  results, curves, traces, targets = [], {}, {}, {}

  def do(run: Run) -> None:
    workdir = os.path.join(root, run.name)
    run_archive = archive_root and os.path.join(archive_root, run.name)
    if archive_root:
      archive(workdir, run_archive, restore=True)
      if run.config == "blt" and _finished(workdir):  # a finished blt's config names its entropy LM's
        archive(lm_workdir, lm_archive, restore=True)
    done = _finished(workdir) if args.report else None
    if args.report and done is None:
      return  # before its config: an unfinished blt has no entropy LM to size against
    if run.config == "blt" and not args.report:
      ensure_entropy_lm(args.variant, root, args.data_dir)
      if archive_root:
        archive(lm_workdir, lm_archive, restore=False)
    c = make_config(run, args.variant, root)
    if args.data_dir:
      c.data.data_dir = args.data_dir
    if not args.report:
      log.info("%s: %s, d_model %s, d_ff %s, lr %g, seed %d", run.name, c.model.layout, c.model.d_model,
               c.model.d_ff, c.opt.lr, c.seed)
      done = train_and_measure(run, c, workdir, noise=not args.no_noise)
      if archive_root:
        archive(workdir, run_archive, restore=False)
    results.append(done)
    curves[run.name] = curve(workdir, c)
    if c.model.router == "delete_gate":
      traces[run.name] = deletion_trace(workdir)
      targets[run.name] = 1.0 - 1.0 / c.model.target_ratio[0]

  for run in runs:
    do(run)
  # The seeds run at their family's best lr, known once its sweep is finished (also from an earlier call).
  finished = {r["name"]: r for r in results}
  for n in SEEDED:
    for name in sweep_members(n).values():
      if name not in finished:
        r = _finished(os.path.join(root, name)) or (archive_root and _finished(os.path.join(archive_root, name)))
        if r:
          finished[name] = r
  waiting = [n for n in SEEDED if n not in best_lrs(finished)]
  if waiting and not args.report:
    log.info("seed runs of %s wait for their lr sweeps", ", ".join(waiting))
  for run in seed_runs(best_lrs(finished)):
    if not args.only or run.name in args.only:
      do(run)
  path = os.path.join(args.results, f"study_{args.variant}.json")
  previous = None
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      previous = json.load(f)
  report = {"variant": args.variant, **provenance(results, previous), "recipe": VARIANTS[args.variant],
            "runs": results, **({"deletion_traces": traces} if traces else {})}
  os.makedirs(args.results, exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2)
  if results:
    main_runs = {r["name"] for r in shown_in_main_table(results)}
    plot({n: pts for n, pts in curves.items() if n in main_runs}, os.path.join(args.results, f"study_{args.variant}.png"),
         reference=2.42 if args.variant != "tiny" else None)
  print(table(results))
  print()
  print(noise_table(results))
  seeds = seeds_table(results)
  if seeds:
    print()
    print(seeds)
  if traces:
    print()
    print(deletion_table(traces, targets))
  return report


if __name__ == "__main__":
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
  logging.getLogger("absl").setLevel(logging.WARNING)
  try:
    main()
  except Interrupted as e:
    log.warning("%s", e)
    raise SystemExit(1) from None
