"""One-line errors for the user's mistakes, shared by the entry points (train.py, eval.py, calibrate_entropy).

A mistyped `--config.*` key, a bad value, a config file that does not load, or a `ValueError` /
`FileNotFoundError` that hnet raises on purpose (bad layout, missing data, ...) ends the program
with `<prog>: error: <message>` on one line and exit status 2 / 1. Anything else is a bug and
keeps its traceback.
"""
import os
import sys
import traceback
from typing import Callable

from absl import app, flags

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # hnet/
# Our code: the package, and the checkout's configs/ link (a config file run through it keeps that path).
_OURS = (_PACKAGE + os.sep, os.path.join(os.path.dirname(_PACKAGE), "configs") + os.sep)


def one_line(error: BaseException) -> str:
  """The message of an error on one line (the last line of a nested traceback, if it carries one)."""
  while error.args and isinstance(error.args[0], BaseException):  # AttributeError(KeyError(...))
    error = error.args[0]
  message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
  lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
  if not lines:
    return type(error).__name__
  if isinstance(error, KeyError):  # ml_collections: "'key'\nDid you mean ...?"
    return f"unknown config key {lines[0]}" + (f" ({lines[1]})" if len(lines) > 1 else "")
  if isinstance(error, OSError) or any(ln.startswith("Traceback (most recent call last)") for ln in lines):
    lines = lines[-1:]  # the error itself, not the loader's account of where it looked
  return "; ".join(lines)


def raised_by_hnet(error: BaseException) -> bool:
  """True when the innermost frame of the error is hnet's or a config file's: a deliberate check."""
  frames = traceback.extract_tb(error.__traceback__)
  return bool(frames) and os.path.abspath(frames[-1].filename).startswith(_OURS)


def _fail(prog: str, message: str, status: int) -> None:
  print(f"{prog}: error: {message}", file=sys.stderr)
  sys.exit(status)


def run(main: Callable[[list[str]], None], prog: str) -> None:
  """`absl.app.run(main)` with one-line errors for command-line, config and data mistakes."""

  def parse(argv: list[str]) -> list[str]:
    try:
      rest = flags.FLAGS(argv)
      for name in ("config",):  # config_flags loads the file lazily: load it here
        if name in flags.FLAGS:
          _ = flags.FLAGS[name].value.to_dict()
      return rest
    except (flags.Error, AttributeError, KeyError, ValueError, TypeError, OSError) as e:
      # config_flags reports unknown keys, bad values and unloadable files with these.
      _fail(prog, one_line(e), 2)

  def checked_main(argv: list[str]) -> None:
    try:
      main(argv)
    except (ValueError, FileNotFoundError) as e:
      if not raised_by_hnet(e):
        raise
      _fail(prog, one_line(e), 1)

  app.run(checked_main, flags_parser=parse)
