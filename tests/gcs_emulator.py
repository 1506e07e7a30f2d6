"""A local GCS emulator (`gcp-storage-emulator`, in memory) on 127.0.0.1, and the settings that point every
client at it: gcsfs and google-cloud-storage (`STORAGE_EMULATOR_HOST`), TensorStore, which writes orbax's
arrays (`TENSORSTORE_GCS_HTTP_URL`, with `GOOGLE_AUTH_TOKEN_FOR_TESTING` so it looks for no credentials).

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

BUCKET = "hnet-test"


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def client_env(url: str) -> dict[str, str]:
  """The environment that points gcsfs, google-cloud-storage and TensorStore at the emulator at `url`."""
  return {
      "STORAGE_EMULATOR_HOST": url,  # gcsfs, google-cloud-storage (tensorboardX's gs:// writer)
      "TENSORSTORE_GCS_HTTP_URL": url,  # TensorStore's gcs kvstore (orbax's arrays); read once per process
      "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",  # TensorStore: a fixed token instead of Google credentials
      "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",  # gcsfs: no bucket-type probe (it wants real credentials)
  }


@contextlib.contextmanager
def running(bucket: str = BUCKET, log_path: str = os.devnull) -> Iterator[str]:
  """Starts the emulator with `bucket` on a free port; yields its URL; stops it afterwards."""
  port = _free_port()
  url = f"http://127.0.0.1:{port}"
  with open(log_path, "wb") as log:
    proc = subprocess.Popen([sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
                             "--port", str(port), "--in-memory", "--default-bucket", bucket],
                            stdout=log, stderr=subprocess.STDOUT)
  try:
    deadline = time.time() + 30
    while True:
      if proc.poll() is not None:
        raise RuntimeError(f"gcp-storage-emulator exited with status {proc.returncode} (log: {log_path})")
      try:
        with urllib.request.urlopen(f"{url}/storage/v1/b/{bucket}", timeout=1) as r:
          if r.status == 200:
            break
      except OSError:
        if time.time() > deadline:
          raise RuntimeError(f"gcp-storage-emulator did not answer on {url} within 30 s") from None
        time.sleep(0.1)
    yield url
  finally:
    proc.terminate()
    proc.wait(timeout=10)
