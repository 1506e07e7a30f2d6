"""Train a byte-level hierarchical LM.

  python train.py                                     # default small H-Net on the embedded corpus
  python train.py --config configs/flat.py --config.train.num_steps=2000 --workdir runs/flat
  python train.py --config configs/hnet_1stage.py:tiny  # any config shrunk for a smoke test
  python train.py --config configs/hnet_1stage_XL.py --aot h100   # will it fit? (compiles, runs nothing)

Restarting with the same --workdir resumes from its latest checkpoint (the same run: see "What may
change on resume" in docs/training.md); --init_from=<workdir> starts a new run from another run's weights.
"""
import json
import logging
import os
import sys

from hnet.train.accelerators import GPU_MEMORY_FRACTION  # imports jax; its GPU backend starts later, reading this

# JAX takes 75% of a GPU's memory by default; a training process owns the GPU (`--aot` checks against this).
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", str(GPU_MEMORY_FRACTION))

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from hnet.config import model_config_from_dict
from hnet.configs import validate
from hnet.train import entry_errors

FLAGS = flags.FLAGS
entry_errors.define_config(os.path.join(os.path.dirname(os.path.abspath(__file__)), "hnet", "configs", "default.py"),
                           "Config file (see configs/).")
flags.DEFINE_string("workdir", "runs/default", "Directory for checkpoints, metrics and the config.")
flags.DEFINE_enum("distributed", "none", ["none", "auto", "explicit"],
                  "Multi-host start: 'auto' for TPU pods / SLURM, 'explicit' with the flags below.")
flags.DEFINE_string("coordinator", None, "host:port of process 0 (explicit multi-host start).")
flags.DEFINE_integer("num_processes", None, "Number of processes (explicit multi-host start).")
flags.DEFINE_integer("process_id", None, "This process's index (explicit multi-host start).")
flags.DEFINE_string("init_from", None, "Start a new run (a new --workdir) from the parameters of the latest checkpoint "
                    "of the run in this work dir: fine-tuning, fresh optimizer state, step 0.")
flags.DEFINE_bool("progress", True, "Show a progress bar.")
flags.DEFINE_string("aot", None, "Compile the train step ahead of time for a target and report whether it fits, "
                    "then exit (1 if it does not): v4-N, v5p-N, v5e-N, v6e-N, h100, h100x8, h200, a100.")
flags.DEFINE_string("aot_report", None, "With --aot: also write the measurements to this JSON file.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax / grain chatter
  handler = logging.StreamHandler()
  handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
  hnet_log = logging.getLogger("hnet")
  hnet_log.setLevel(logging.INFO)
  hnet_log.addHandler(handler)
  hnet_log.propagate = False
  validate.check(FLAGS.config)  # every key in range, before any data or model
  model_config_from_dict(FLAGS.config.model)  # the layout and the model's shape rules, before the work dir
  if FLAGS.aot:
    sys.exit(compile_ahead_of_time(FLAGS.aot, FLAGS.aot_report))
  entry_errors.check_writable(FLAGS.workdir, "--workdir")
  from hnet.train import accelerators, distributed, goodput, trainer  # pylint: disable=import-outside-toplevel
  accelerators.quiet_libtpu()  # before the first TPU-branch lowering loads libtpu
  distributed.initialize(FLAGS.distributed, FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id)
  result = trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir, progress=FLAGS.progress,
                                      init_from=FLAGS.init_from)
  ev = result["eval"]
  if ev:
    print(f"done: step {result['step']}, validation bits/byte {ev['bits_per_byte']:.4f}, "
          f"workdir {FLAGS.workdir}")
  print(goodput.summary_line(result["goodput"]))


def compile_ahead_of_time(target_name: str, report_path: str | None) -> int:
  from hnet.train import accelerators, aot  # pylint: disable=import-outside-toplevel
  target = accelerators.parse(target_name)
  if target.platform == "cuda":
    accelerators.prepare_gpu_compiles()  # before the first compile
  report = aot.compile_train_step(FLAGS.config, target)
  print(aot.format_report(report, config_flags.get_config_filename(FLAGS["config"])))
  if report_path:
    with open(report_path, "w", encoding="utf-8") as f:
      json.dump(report.to_json(), f, indent=2)
  return 0 if report.fits else 1


if __name__ == "__main__":
  entry_errors.run(main, "train.py")
