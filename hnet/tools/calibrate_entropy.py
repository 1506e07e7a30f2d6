"""Measure BLT's entropy threshold θ that gives `model.target_ratio` bytes per patch on training data.

  python -m hnet.tools.calibrate_entropy --config configs/blt.py --config.model.entropy_model=runs/entropy
  python -m hnet.tools.calibrate_entropy --config configs/blt.py --config.model.entropy_model=runs/entropy --write

BLT tunes θ until the mean patch size hits its target (their issue #106); this does it in one
pass: it scores `--batches` training batches with the frozen entropy LM, takes the statistic of
the configured rule (H[t-1], or H[t-1] - H[t-2] for 'monotonic') at every position the rule
decides, and picks θ halfway between the two scores where the patch count crosses 1 / N of the
positions (document starts, and the monotonic rule's byte 1, are patches whatever θ). `--write`
puts θ into the config file (its `c.model.entropy_threshold = ...` line).

`--write` refuses, on one line and before measuring, a θ that is not the config file's own: one
measured with a variant (`:tiny`) or `--config.*` overrides (other than `model.entropy_model` and
`data.data_dir`), on fewer than MIN_WRITE_BYTES bytes, or with an entropy LM that is not a finished
run of configs/entropy_lm.py as it is written. `--force_write` writes it anyway.
"""
# pylint: disable=invalid-name
import importlib.util
import json
import logging
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from absl import logging as absl_logging
from flax import nnx
from ml_collections import config_flags

from hnet.config import model_config_from_dict
from hnet.configs import entropy_lm
from hnet.configs.stored import default_config, flatten, merge_config
from hnet.model import chunking
from hnet.model.routers.entropy import next_byte_entropy

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "The BLT config (router 'entropy').", lock_config=True)
flags.DEFINE_integer("batches", 64, "Training batches to measure on.")
flags.DEFINE_bool("write", False, "Write θ into the config file (refused for a θ that is not the file's own).")
flags.DEFINE_bool("force_write", False, "Write θ into the config file even when --write would refuse.")
log = logging.getLogger("hnet.tools.calibrate_entropy")
_THRESHOLD_LINE = re.compile(r"^(\s*c\.model\.entropy_threshold\s*=\s*)([-+0-9.eE]+)(.*)$", re.M)
MIN_WRITE_BYTES = 100_000  # the default 64 batches of configs/blt.py offer 131,072
_FREE_KEYS = ("model.entropy_model", "model.entropy_threshold", "data.data_dir")  # do not change θ's meaning


@jax.jit(static_argnames=("graphdef", "rule"))
def _statistics(params, tokens_BL, segment_ids_BL, *, graphdef, rule: str):
  """(score_BL, decided_BL, forced_BL): the rule's statistic, where θ decides, where a patch starts anyway."""
  h_BL = next_byte_entropy(nnx.merge(graphdef, params)(tokens_BL, segment_ids_BL)[0])
  shift = lambda a_BL: jnp.pad(a_BL[:, :-1], ((0, 0), (1, 0)))  # noqa: E731
  pos_BL = chunking.positions_in_document(segment_ids_BL)
  valid_BL = segment_ids_BL > 0
  if rule == "global":
    score_BL, first_decided = shift(h_BL), 1
  else:
    score_BL, first_decided = shift(h_BL) - shift(shift(h_BL)), 2
  forced_BL = valid_BL & (pos_BL < first_decided)  # document starts (and byte 1 under 'monotonic')
  return score_BL, valid_BL & (pos_BL >= first_decided), forced_BL


def threshold_for(scores: np.ndarray, positions: int, forced: int, target_ratio: float) -> float:
  """θ such that (forced + #{scores > θ}) / positions is as close as possible to 1 / target_ratio."""
  wanted = int(round(positions / target_ratio)) - forced
  if wanted <= 0 or not len(scores):
    raise ValueError(f"{forced} forced patch starts in {positions} positions already exceed 1/{target_ratio}: "
                     "measure on longer rows (data.seq_len)")
  ranked = np.sort(scores)[::-1]
  if wanted >= len(ranked):
    return float(ranked[-1]) - 1.0
  return float((ranked[wanted - 1] + ranked[wanted]) / 2)


def calibrate(c, batches: int) -> dict:
  """θ for `c` (a config with router 'entropy') and the bytes per patch it gives on the sample."""
  from hnet.data import pipeline  # pylint: disable=import-outside-toplevel
  from hnet.train import runs  # pylint: disable=import-outside-toplevel
  model_cfg = model_config_from_dict(c.model)
  if model_cfg.router != "entropy":
    raise ValueError(f"model.router={model_cfg.router!r}: calibration is for the 'entropy' router")
  loaded = runs.load(model_cfg.entropy_model, devices=jax.local_devices()[:1])
  pipeline.prepare(c.data)
  it = pipeline.make_train_iterator(c.data, global_batch_size=c.train.batch_size, seed=c.seed)
  scores, positions, forced = [], 0, 0
  for _ in range(batches):
    batch = next(it)
    score_BL, decided_BL, forced_BL = jax.device_get(_statistics(
        loaded.params, jnp.asarray(batch["inputs"], jnp.int32), jnp.asarray(batch["segment_ids"], jnp.int32),
        graphdef=loaded.graphdef, rule=model_cfg.entropy_rule))
    scores.append(np.asarray(score_BL)[np.asarray(decided_BL)])
    positions += int((np.asarray(batch["segment_ids"]) > 0).sum())
    forced += int(np.asarray(forced_BL).sum())
  scores = np.concatenate(scores)
  n = model_cfg.stages[0].target_ratio
  theta = threshold_for(scores, positions, forced, n)
  patches = forced + int((scores > theta).sum())
  return {"threshold": theta, "rule": model_cfg.entropy_rule, "target_ratio": n,
          "bytes_per_patch": positions / patches, "positions": positions, "entropy_model": loaded.checkpoint_dir,
          "entropy_model_step": loaded.step}


def write_threshold(config_path: str, theta: float) -> None:
  """Replaces the value of the `c.model.entropy_threshold = ...` line of a config file."""
  with open(config_path, encoding="utf-8") as f:
    text = f.read()
  new, count = _THRESHOLD_LINE.subn(lambda m: f"{m.group(1)}{theta:.4f}{m.group(3)}", text, count=1)
  if count != 1:
    raise ValueError(f"{config_path} has no line 'c.model.entropy_threshold = <number>' to write θ into")
  with open(config_path, "w", encoding="utf-8") as f:
    f.write(new)


def _differing(got: dict, want: dict, skip: tuple[str, ...] = ()) -> list[str]:
  got, want = flatten(got), flatten(want)
  return sorted(k for k in set(got) | set(want) if k not in skip and got.get(k) != want.get(k))


def write_refusal(measured, own, measured_bytes: int, lm_stored: dict, lm_step: int, lm_own) -> str | None:
  """Why θ measured with config `measured` may not replace the θ of the file whose config is `own`; None if it may.

  `lm_stored` / `lm_step`: the entropy LM run's stored config and checkpoint step; `lm_own`: configs/entropy_lm.py's.
  """
  reasons = []
  keys = _differing(measured.to_dict(), own.to_dict(), _FREE_KEYS)
  if keys:
    shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
    reasons.append(f"the config differs from the file's own in {shown} (a variant such as ':tiny', or overrides)")
  if measured_bytes < MIN_WRITE_BYTES:
    reasons.append(f"only {measured_bytes:,} bytes to measure (batches x batch_size x seq_len; "
                   f"{MIN_WRITE_BYTES:,} at least: raise --batches)")
  lm = merge_config(lm_stored, defaults=default_config())
  lm_keys = _differing({"model": lm.model.to_dict()}, {"model": lm_own.model.to_dict()})
  if lm_keys:
    reasons.append(f"the entropy LM is not configs/entropy_lm.py's model (differs in {', '.join(lm_keys[:4])})")
  elif lm_step < lm_own.train.num_steps:
    reasons.append(f"the entropy LM is at step {lm_step} of configs/entropy_lm.py's {lm_own.train.num_steps}")
  return "; ".join(reasons) or None


def _own_config(path: str):
  """The config file's `get_config()` without a variant or overrides."""
  spec = importlib.util.spec_from_file_location("_calibrated_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def check_write(c, path: str, batches: int) -> None:
  """Raises a one-line ValueError when --write would put into `path` a θ that is not its own."""
  from hnet.train import runs  # pylint: disable=import-outside-toplevel
  model_config_from_dict(c.model)  # the router and the entropy LM's work dir, checked with their own messages
  lm_workdir, _, lm_step = runs.resolve(c.model.entropy_model)
  with open(os.path.join(lm_workdir, "config.json"), encoding="utf-8") as f:
    lm_stored = json.load(f)
  why = write_refusal(c, _own_config(path), batches * c.train.batch_size * c.data.seq_len, lm_stored, lm_step,
                      entropy_lm.get_config())
  if why:
    raise ValueError(f"refusing --write into {path}: {why}; print θ without --write, or --force_write to write it "
                     "anyway")


def main(argv):
  del argv
  absl_logging.set_verbosity(absl_logging.WARNING)  # tfds / orbax chatter
  if FLAGS.config is None:
    raise ValueError("give --config (e.g. configs/blt.py) and --config.model.entropy_model=<work dir>")
  path = config_flags.get_config_filename(FLAGS["config"]).split(":")[0]
  if FLAGS.write and not FLAGS.force_write:
    check_write(FLAGS.config, path, FLAGS.batches)
  out = calibrate(FLAGS.config, FLAGS.batches)
  print(f"θ = {out['threshold']:.4f} nats ({out['rule']} rule): {out['bytes_per_patch']:.3f} bytes per patch "
        f"on {out['positions']:,} training bytes (target {out['target_ratio']}), entropy LM step "
        f"{out['entropy_model_step']} of {out['entropy_model']}")
  if FLAGS.write or FLAGS.force_write:
    write_threshold(path, out["threshold"])
    print(f"written to {path}")
  else:
    print(f"use it: --config.model.entropy_threshold={out['threshold']:.4f}  (or rerun with --write)")


if __name__ == "__main__":
  from hnet.train import entry_errors  # pylint: disable=g-import-not-at-top
  entry_errors.run(main, "calibrate_entropy")
