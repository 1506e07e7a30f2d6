"""One training process per work dir: `<workdir>/train.lock` names the process that trains there.

The lock file holds the holder's pid, host, start time (and, on Linux, the kernel's start time of
that pid, so a reused pid is not mistaken for the holder). A second `train.py` on the work dir
stops with one line naming the holder. A lock left by a process that died without releasing it
(`kill -9`, a crash of the machine) does not block on the same host: the pid is checked and the
stale lock replaced. A lock written on another host cannot be checked from here: it blocks, and the
message says to delete the file if that process is gone. Multi-host runs: process 0 holds the lock.

Released when the `hold` block ends: normal exit, an exception, and SIGTERM outside the training
loop (the loop itself turns SIGTERM into a checkpoint and a normal exit).

A work dir in a bucket (gs://, s3://) is not locked: an object store has no exclusive create that
this scheme could stand on (a plain write replaces the object) and no pid to check, so a lock there
would either block forever after a crash or not exclude at all. `hold` logs that once and runs
unlocked: one job per bucket work dir is the launcher's business (one TPU job per run).
"""
import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
from typing import Iterator

from hnet import storage

log = logging.getLogger(__name__)

LOCK_NAME = "train.lock"


class WorkdirInUse(ValueError):
  """Another live process trains in this work dir."""


def _pid_start(pid: int) -> str | None:
  """The kernel's start time of `pid` (Linux /proc), None where it cannot be read."""
  try:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
      stat = f.read()
  except OSError:
    return None
  fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state is field 3, starttime field 22
  return None if fields[0] in ("Z", "X") else fields[19]


def _alive(holder: dict) -> bool:
  """True when the holder's process (on this host) still runs and is the same process."""
  pid = int(holder.get("pid", -1))
  if pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's live process
    return True
  if os.path.isdir("/proc/self"):
    start, recorded = _pid_start(pid), holder.get("pid_start")
    return start is not None and (recorded is None or start == recorded)
  return True


def _read(path: str) -> dict | None:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError):  # half-written by a process killed while writing it
    return {}


def describe(holder: dict) -> str:
  return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since {holder.get('started', '?')}")


def acquire(workdir: str) -> str:
  """Creates `<workdir>/train.lock` for this process and returns its path; WorkdirInUse if a live process holds it."""
  path = os.path.join(workdir, LOCK_NAME)
  me = {"pid": os.getpid(), "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "pid_start": _pid_start(os.getpid())}
  for _ in range(5):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      holder = _read(path)
      if holder is None:  # released meanwhile
        continue
      if holder and holder.get("host") != me["host"]:
        raise WorkdirInUse(f"work dir {workdir} is locked by {describe(holder)} (another host: it cannot be checked "
                           f"from here); if that process is gone, delete {path}") from None
      if holder and _alive(holder):
        raise WorkdirInUse(f"work dir {workdir} is in use by train.py {describe(holder)}: wait for it to end, "
                           "or train in another --workdir") from None
      _take_stale(path, holder)
      continue
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      json.dump(me, f)
    return path
  raise WorkdirInUse(f"work dir {workdir}: cannot take {path} (other processes keep replacing it)")


def _take_stale(path: str, holder: dict) -> None:
  """Removes a dead holder's lock; a lock that changed since it was read (a new holder) is put back."""
  aside = f"{path}.stale.{os.getpid()}"
  try:
    os.rename(path, aside)  # atomic: of two processes replacing one stale lock, one gets it
  except FileNotFoundError:
    return
  if _read(aside) != holder:
    os.rename(aside, path)
    return
  os.remove(aside)
  log.warning("replaced the stale lock of %s (that process is gone) in %s", describe(holder or {}),
              os.path.dirname(path))


def release(path: str) -> None:
  """Removes the lock if this process holds it."""
  holder = _read(path)
  if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
    os.remove(path)


def _exit_on_sigterm(signum, frame):
  del frame
  raise SystemExit(128 + signum)


@contextlib.contextmanager
def hold(workdir: str, enabled: bool = True) -> Iterator[None]:
  """Holds the work dir's lock for the block (when `enabled`: process 0); SIGTERM ends the block cleanly."""
  if not enabled:
    yield
    return
  if storage.is_remote(workdir):
    log.info("work dir %s is in a bucket: not locked (train.lock is local-only; run one job per work dir)", workdir)
    yield
    return
  path = acquire(workdir)
  previous = None
  if threading.current_thread() is threading.main_thread():
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
  try:
    yield
  finally:
    if previous is not None:
      signal.signal(signal.SIGTERM, previous)
    release(path)
