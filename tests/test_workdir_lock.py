"""The work-dir lock: a live holder blocks with one line, a dead one (kill -9) does not, release on every exit."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from hnet.train import workdir_lock
from tests.conftest import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A process that holds the lock of argv[1] until it is killed (or gets SIGTERM).
HOLDER = """
import sys, time
from hnet.train import workdir_lock
with workdir_lock.hold(sys.argv[1]):
  print("held", flush=True)
  time.sleep(600)
"""


def _holder(workdir):
  proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(workdir)], env={**os.environ, "PYTHONPATH": ROOT},
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  assert proc.stdout.readline().decode().strip() == "held"
  return proc


def _lock(workdir):
  with open(os.path.join(workdir, workdir_lock.LOCK_NAME), encoding="utf-8") as f:
    return json.load(f)


def test_a_live_holder_blocks_and_its_kill_9_frees_the_work_dir(tmp_path):
  proc = _holder(tmp_path)
  try:
    assert _lock(tmp_path)["pid"] == proc.pid
    with pytest.raises(workdir_lock.WorkdirInUse, match=rf"^work dir {tmp_path} is in use by train.py pid {proc.pid} "
                                                        rf"on host {socket.gethostname()} since .*UTC: wait"):
      workdir_lock.acquire(str(tmp_path))
  finally:
    proc.kill()
    proc.wait()
  assert _lock(tmp_path)["pid"] == proc.pid  # kill -9 left its lock behind: stale
  with workdir_lock.hold(str(tmp_path)):
    assert _lock(tmp_path)["pid"] == os.getpid()
  assert not os.path.exists(tmp_path / workdir_lock.LOCK_NAME)


def test_sigterm_and_exceptions_release_the_lock(tmp_path):
  proc = _holder(tmp_path)
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=60) == 128 + signal.SIGTERM
  assert not os.path.exists(tmp_path / workdir_lock.LOCK_NAME)
  with pytest.raises(RuntimeError, match="inside"):
    with workdir_lock.hold(str(tmp_path)):
      raise RuntimeError("inside")
  assert not os.path.exists(tmp_path / workdir_lock.LOCK_NAME)


def test_a_lock_from_another_host_blocks_with_advice(tmp_path):
  path = tmp_path / workdir_lock.LOCK_NAME
  path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "2026-12-05 07:00:00 UTC"}))
  with pytest.raises(workdir_lock.WorkdirInUse, match=rf"pid 1 on host elsewhere .*another host.*delete {path}$"):
    workdir_lock.acquire(str(tmp_path))
  assert json.loads(path.read_text())["host"] == "elsewhere"


def test_a_reused_pid_is_not_the_holder(tmp_path):
  """Same host, a live pid, but not the process that wrote the lock (another start time): stale."""
  path = tmp_path / workdir_lock.LOCK_NAME
  path.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "?", "pid_start": "1"}))
  assert workdir_lock.acquire(str(tmp_path)) == str(path)
  assert _lock(tmp_path)["pid_start"] != "1"


def test_a_second_train_py_on_a_work_dir_exits_with_one_line(tmp_path):
  proc = _holder(tmp_path)
  try:
    env = {**os.environ, "PYTHONPATH": ROOT, "XLA_FLAGS": xla_flags(1), "JAX_PLATFORMS": "cpu"}
    start = time.time()
    out = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--config",
                          os.path.join(ROOT, "configs/hnet_1stage.py:tiny"), f"--workdir={tmp_path}",
                          "--progress=false"], env=env, capture_output=True, timeout=300)
  finally:
    proc.kill()
    proc.wait()
  err = out.stderr.decode().strip()
  assert out.returncode == 1 and err.splitlines() == [
      f"train.py: error: work dir {tmp_path} is in use by train.py pid {proc.pid} on host {socket.gethostname()} "
      f"since {_lock(tmp_path)['started']}: wait for it to end, or train in another --workdir"], err[-3000:]
  assert time.time() - start < 120  # refused before data and model
  assert os.listdir(tmp_path) == [workdir_lock.LOCK_NAME]
