"""Results as a markdown table (printed) and JSON (written)."""
import json
import math
import os
from typing import Sequence

from hnet import storage


def _cell(x) -> str:
  s = str(x).replace("|", "\\|")
  return s.replace("\r", "\\r").replace("\n", "\u23ce")  # one table row per record


def markdown_table(rows: Sequence[dict]) -> str:
  """Columns from the first row's keys, in order; newlines shown as ⏎ and pipes escaped."""
  if not rows:
    return ""
  cols = list(rows[0])
  lines = ["| " + " | ".join(_cell(c) for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
  lines += ["| " + " | ".join(_cell(r.get(c, "")) for c in cols) + " |" for r in rows]
  return "\n".join(lines)


def _finite(x):
  """NaN / inf as null so the file is strict JSON."""
  if isinstance(x, float) and not math.isfinite(x):
    return None
  if isinstance(x, dict):
    return {k: _finite(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_finite(v) for v in x]
  return x


def write_json(path: str, result: dict) -> str:
  """Writes `result` to `path`; an OSError that names the path and says the printed result is all there is."""
  try:
    storage.makedirs(os.path.dirname(storage.resolve(path)))
    with storage.open_file(path, "w") as f:
      json.dump(_finite(result), f, indent=2, ensure_ascii=False)
      f.write("\n")
  except OSError as e:
    raise OSError(e.errno, f"cannot write {path} ({e.strerror}): the result printed above was not saved; "
                  "--out names another file") from None
  return path
