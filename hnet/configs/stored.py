"""A run's stored config (`config.json`, or the checkpoint's config item) read back with today's defaults.

Pure: ml_collections and the packaged `base` config, no jax. A key added to the config since a run was
written takes its default; `--config.a.b=v` style overrides apply on top and must name existing keys.
"""
import ml_collections

from hnet.configs import base, validate


def _tuples(x):
  """JSON lists back to the tuples the config declares."""
  if isinstance(x, dict):
    return {k: _tuples(v) for k, v in x.items()}
  if isinstance(x, list):
    return tuple(_tuples(v) for v in x)
  return x


def flatten(d: dict, prefix: str = "") -> dict:
  """A nested config dict as {"a.b": value}."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = v
  return out


def merge_config(stored: dict, overrides: dict | None = None,
                 defaults: ml_collections.ConfigDict | None = None) -> ml_collections.ConfigDict:
  """The stored config, with keys it lacks (added since) from `defaults`, then `overrides` ("a.b": v); validated."""
  c = ml_collections.ConfigDict(_tuples(stored))
  if defaults is not None:
    have = flatten(c.to_dict())
    for key, value in flatten(defaults.to_dict()).items():
      if key not in have:
        _set(c, key, value, create=True)
  for key, value in (overrides or {}).items():
    _set(c, key, value, create=False)
  c.lock()
  validate.check(c)
  return c


def _set(c: ml_collections.ConfigDict, key: str, value, *, create: bool) -> None:
  *parents, leaf = key.split(".")
  node = c
  for p in parents:
    if p not in node:
      if not create:
        raise ValueError(f"--config.{key}: the checkpoint's config has no section {p!r}")
      node[p] = ml_collections.ConfigDict()
    node = node[p]
  if not create and leaf not in node:
    raise ValueError(f"--config.{key}: the checkpoint's config has no such key")
  if leaf in node and node[leaf] is not None and value is not None:
    value = type(node[leaf])(value) if isinstance(node[leaf], (tuple, float)) else value
  node[leaf] = value


def default_config() -> ml_collections.ConfigDict:
  """Today's defaults (`hnet/configs/base.py`, packaged with hnet): what an older run's config lacks."""
  return base.get_config()
