"""One-line errors for the user's mistakes, shared by the entry points (train.py, eval.py, calibrate_entropy).

A mistyped `--config.*` key, a bad value, a config file that does not load, a `ValueError` /
`OSError` / `RuntimeError` that hnet raises on purpose (bad layout, missing data, a missing
compiler, a result it cannot write, ...), or a directory the program may not write ends the program with
`<prog>: error: <message>` on one line and exit status 2 / 1. Anything else is a bug and keeps
its traceback.
"""
import errno
import os
import sys
import tempfile
import traceback
from typing import Callable

from absl import app, flags
from ml_collections import config_flags

from hnet import storage

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # hnet/
# Our code: the package, and the checkout's configs/ link (a config file run through it keeps that path).
_OURS = (_PACKAGE + os.sep, os.path.join(os.path.dirname(_PACKAGE), "configs") + os.sep)


def one_line(error: BaseException) -> str:
  """The message of an error on one line (the last line of a nested traceback, if it carries one)."""
  while error.args and isinstance(error.args[0], BaseException):  # AttributeError(KeyError(...))
    error = error.args[0]
  message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
  if isinstance(error, OSError) and error.strerror and not error.filename:  # OSError(errno, message): no "[Errno N]"
    message = error.strerror
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


# Raised by hnet on purpose, for the user: the message is the answer. FloatingPointError: a non-finite loss.
DELIBERATE = (ValueError, RuntimeError, FloatingPointError)  # and OSError
# Writing where the user may not: the path and the reason are the answer, wherever it was raised.
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)


def _fail(prog: str, message: str, status: int) -> None:
  print(f"{prog}: error: {message}", file=sys.stderr)
  sys.exit(status)


def _prog() -> str:
  return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "hnet"


def define_config(default: str, help_string: str) -> None:
  """`--config` (a config file, `default` unless given) with `--config.<key>=value` overrides.

  config_flags loads the default file and applies the overrides at definition time when `--config`
  itself is not on the command line: a mistyped key must end in one line there too.
  """
  try:
    config_flags.DEFINE_config_file("config", default, help_string, lock_config=True)
  except (flags.Error, AttributeError, KeyError, ValueError, TypeError, OSError) as e:
    _fail(_prog(), one_line(e), 2)


def not_writable(error: BaseException) -> str | None:
  """'cannot write <path>: <reason>' for a permission / read-only / full-disk error, else None."""
  if not (isinstance(error, OSError) and error.errno in NOT_WRITABLE):
    return None
  reason = error.strerror or os.strerror(error.errno)
  return f"cannot write {error.filename}: {reason}" if error.filename else reason


def check_writable(directory: str, what: str) -> None:
  """Makes `directory` and writes a probe file in it; an OSError naming `what` if either fails.
  A bucket directory: a probe object is written and removed (a missing bucket or access fails here)."""
  if storage.is_remote(directory):
    probe = storage.path(directory) / f".hnet-write-probe-{os.getpid()}"
    try:
      probe.write_text("")
      probe.unlink()
    except Exception as e:  # pylint: disable=broad-except  (each client has its own errors)
      raise OSError(errno.EIO, f"{what}={directory!r} is not writable ({type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else ''}): check the bucket and its credentials") from None
    return
  try:
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryFile(dir=directory):
      pass
  except OSError as e:
    raise OSError(e.errno, f"{what}={directory!r} is not writable ({e.strerror}): choose another "
                  "directory") from None


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
    except OSError as e:
      if (message := not_writable(e)) is not None:
        _fail(prog, message, 1)
      if not raised_by_hnet(e):
        raise
      _fail(prog, one_line(e), 1)
    except DELIBERATE as e:
      if not raised_by_hnet(e):
        raise
      _fail(prog, one_line(e), 1)

  app.run(checked_main, flags_parser=parse)
