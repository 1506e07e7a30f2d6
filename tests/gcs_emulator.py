"""Starts and stops the local GCS emulator (hnet/tools/gcs_emulator.py, on gcp-storage-emulator) for the tests.

The emulator is in the `test` extra: a missing one fails the tests that use it, it never skips them.
"""
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Iterator

from hnet.tools.gcs_emulator import client_env  # noqa: F401  (the environment that points the clients at it)

BUCKET = "hnet-test"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def running(bucket: str = BUCKET, log_path: str = os.devnull) -> Iterator[str]:
  """Starts the emulator (in memory, a subprocess) with `bucket` on a free port; yields its URL; stops it after."""
  port = _free_port()
  url = f"http://127.0.0.1:{port}"
  with open(log_path, "wb") as log:
    proc = subprocess.Popen([sys.executable, "-m", "hnet.tools.gcs_emulator", "--port", str(port), "--bucket", bucket],
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
  try:
    deadline = time.time() + 30
    while True:
      if proc.poll() is not None:
        raise RuntimeError(f"the GCS emulator exited with status {proc.returncode} (log: {log_path})")
      try:
        with urllib.request.urlopen(f"{url}/storage/v1/b/{bucket}", timeout=1) as r:
          if r.status == 200:
            break
      except OSError:
        if time.time() > deadline:
          raise RuntimeError(f"the GCS emulator did not answer on {url} within 30 s (log: {log_path})") from None
        time.sleep(0.1)
    yield url
  finally:
    proc.terminate()
    proc.wait(timeout=10)
