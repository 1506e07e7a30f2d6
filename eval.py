"""Evaluate a train.py checkpoint: `python eval.py [--workdir runs/default] [COMMAND]`.

  python eval.py --workdir runs/default bpb                  # bits/byte on the validation split (default)
  python eval.py --workdir runs/default noise                # noised-context robustness
  python eval.py --workdir runs/default mc [--hellaswag_file hellaswag_val.jsonl]  # multiple choice, clean and noised
  python eval.py --workdirs runs/default,runs/flat robustness    # the papers' noised multiple-choice table
  python eval.py --workdir runs/default generate --prompt "The " --temperature 0.8
  python eval.py --checkpoint runs/default/checkpoints/1000 boundaries --text "Hello, world"
`--config.<key>=value` overrides a key of the config stored in the checkpoint (see docs/eval.md).
"""
import dataclasses
import logging
import math
import os

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from hnet import VOCAB_SIZE
from hnet.train import entry_errors

FLAGS = flags.FLAGS
entry_errors.define_config(os.path.join(os.path.dirname(os.path.abspath(__file__)), "hnet", "configs", "base.py"),
                           "Only --config.<key>=value overrides are used, applied to the checkpoint's config.")
flags.DEFINE_string("workdir", "runs/default", "train.py work dir; its latest checkpoint unless --step.")
flags.DEFINE_string("checkpoint", None, "A checkpoint path instead: <workdir>/checkpoints[/<step>].")
flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).", lower_bound=0)
flags.DEFINE_string("out", None, "JSON path (boundaries: output dir); default "
                    "<workdir>/eval/<command>_step<N>_<what was evaluated>.json.")
flags.DEFINE_string("text", None, "boundaries: the text to chunk.")
flags.DEFINE_string("text_file", None, "bpb / noise / mc: a .txt or .jsonl file to evaluate; boundaries: the text.")
flags.DEFINE_string("split", None, "bpb / noise / mc: split of data.dataset (default data.eval_split).")
flags.DEFINE_string("hellaswag_file", None, "mc: a released-format HellaSwag jsonl (e.g. hellaswag_val.jsonl).")
flags.DEFINE_integer("limit", -1, "mc / robustness with a file: the first N items (-1 = all).", lower_bound=-1)
flags.DEFINE_string("corpus_mc_file", None, "robustness: items from python -m hnet.evals.harness.corpus_task.")
flags.DEFINE_list("workdirs", [], "robustness: comma-separated work dirs, one table row each (default: --workdir).")
flags.DEFINE_enum("metric", "acc_norm", ["acc", "acc_norm", "acc_bytes"], "robustness: the accuracy shown.")
flags.DEFINE_multi_string("prompt", [], "generate: a prompt (repeatable).")
flags.DEFINE_string("prompt_file", None, "generate: prompts, one per line.")
flags.DEFINE_integer("max_bytes", 256, "generate: new bytes per prompt at most (stops at EOS).", lower_bound=1)
flags.DEFINE_float("temperature", 1.0, "generate: sampling temperature (0 = greedy).", lower_bound=0.0)
flags.DEFINE_integer("top_k", 0, f"generate: keep the k most likely bytes (0 = all, at most {VOCAB_SIZE}).",
                     lower_bound=0, upper_bound=VOCAB_SIZE)
flags.DEFINE_float("top_p", 1.0, "generate: nucleus sampling mass in (0, 1] (1 = off).", lower_bound=0.0,
                   upper_bound=1.0)
flags.DEFINE_integer("seed", 0, "generate: sampling seed.", lower_bound=0)
# The bounds above let NaN through (every comparison with it is false), and top_p 0 would be greedy in disguise.
flags.register_validator("temperature", math.isfinite, "must be a finite number >= 0 (0 = greedy)")
flags.register_validator("top_p", lambda p: math.isfinite(p) and p > 0, "must be in (0, 1] (1 = off)")


def main(argv):
  if len(argv) > 2:
    raise app.UsageError(f"one command at most, got {argv[1:]}")
  absl_logging.set_verbosity(absl_logging.WARNING)
  hnet_log = logging.getLogger("hnet")
  hnet_log.setLevel(logging.INFO)
  hnet_log.addHandler(logging.StreamHandler())
  hnet_log.propagate = False
  from hnet.train import accelerators  # pylint: disable=import-outside-toplevel
  accelerators.quiet_libtpu()  # before the first TPU-branch lowering loads libtpu
  from hnet.evals import commands  # pylint: disable=import-outside-toplevel
  opts = commands.Options(**{f.name: getattr(FLAGS, f.name) for f in dataclasses.fields(commands.Options)})
  overrides = config_flags.get_override_values(FLAGS["config"])
  commands.main(argv[1] if len(argv) > 1 else "bpb", workdir=None if FLAGS.checkpoint else FLAGS.workdir,
                  checkpoint=FLAGS.checkpoint, step=FLAGS.step, overrides=overrides, opts=opts)


if __name__ == "__main__":
  entry_errors.run(main, "eval.py")
