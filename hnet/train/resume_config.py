"""A work dir belongs to one run: what may change when it is resumed, and the check that nothing else did.

The run's stored config is `<workdir>/config.json` (else the newest checkpoint's config item). A resume
may change the keys in `MAY_CHANGE` (a key, or a section ending in '.'): length and schedule of
training, evaluation, checkpoint cadence, batch and accumulation, mesh, and how the model is computed
(remat, scan, kernels, compute dtype). Any other difference in the model (its shape, router, targets)
makes it another run, and so does one in the seed or the data (`DATA_ORDER`) when a train state is
resumed (a work dir holding only converted parameters may be fine-tuned on other data): one line
names the keys and the choices. Keys added to the config since the run was stored count as their defaults.
"""
import json
import os

from hnet import storage
from hnet.configs.stored import default_config, flatten

MAY_CHANGE = (
    "train.", "opt.", "ckpt.", "mesh.", "eval.",
    "data.data_dir", "data.eval_split", "data.prefetch", "data.worker_count",
    "model.remat", "model.scan_layers", "model.ssd_impl", "model.attention_impl", "model.dtype",
    "model.entropy_model",  # BLT's frozen entropy LM: on resume its weights come from the run's checkpoint
)
DATA_ORDER = ("seed", "data.")  # outside MAY_CHANGE: fixed while a train state (its data iterator) is resumed
_SHOWN = 4  # differing keys named in the message


def may_change(key: str) -> bool:
  return any(key == k or (k.endswith(".") and key.startswith(k)) for k in MAY_CHANGE)


def _shown(value):
  """A value as a --config override spells it: sequences as tuples."""
  return tuple(value) if isinstance(value, list) else value


def _plain(value):
  """JSON's view of a value: tuples and lists alike, ints and floats compared as numbers."""
  return json.loads(json.dumps(value))


def differing_keys(stored: dict, config: dict, resuming: bool = True) -> list[tuple[str, object, object]]:
  """(key, stored value, new value) for every key that may not change and differs, sorted by key.

  `resuming`: a train state is restored (seed and data fixed too); else only the model is compared."""
  old = {**flatten(json.loads(default_config().to_json_best_effort())), **flatten(stored)}
  new = flatten(config)
  fixed = lambda k: not may_change(k) and (resuming or not k.startswith(DATA_ORDER))  # noqa: E731
  return [(k, old[k], new[k]) for k in sorted(set(old) & set(new)) if fixed(k) and _plain(old[k]) != _plain(new[k])]


def stored_config(workdir: str, checkpointer=None) -> dict | None:
  """The run's config: `<workdir>/config.json`, else the newest checkpoint's; None for a new work dir."""
  path = os.path.join(workdir, "config.json")
  if storage.path(path).exists():
    try:
      with storage.open_file(path) as f:
        return json.load(f)
    except ValueError as e:
      raise ValueError(f"{path} is not valid JSON ({e}): the work dir's run cannot be identified; "
                       "repair or remove that file") from None
  if checkpointer is not None and checkpointer.all_steps():
    try:
      return checkpointer.restore_config()
    except Exception:  # pylint: disable=broad-except  (no config item, or unreadable: nothing to compare)
      return None
  return None


def check_same_run(workdir: str, config: dict, *, resuming: bool, checkpointer=None) -> None:
  """A one-line ValueError when `workdir` holds a run whose config differs from `config` where it may not."""
  stored = stored_config(workdir, checkpointer)
  if stored is None:
    return
  diffs = differing_keys(stored, config, resuming)
  if not diffs:
    return
  named = ", ".join(f"{k}={_shown(new)} (the run's: {_shown(old)})" for k, old, new in diffs[:_SHOWN])
  more = f" and {len(diffs) - _SHOWN} more keys" if len(diffs) > _SHOWN else ""
  raise ValueError(f"work dir {workdir} holds another run: {named}{more}; train in a new --workdir, or start "
                   f"from this run's weights with --init_from={workdir} --workdir=<new dir> "
                   "(docs/training.md: What may change on resume)")
