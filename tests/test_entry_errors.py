"""train.py / eval.py answer the user's mistakes with one line; real bugs keep their traceback."""
import os
import subprocess
import sys

import numpy as np
import pytest

from hnet.config import parse_layout
from hnet.train import entry_errors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--config",
                         os.path.join(ROOT, "configs/default.py:tiny"), "--progress=false", *args],
                        capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.mark.parametrize("arg,status,message", [
    ("--config.opt.lrr=1", 2, "train.py: error: unknown config key 'lrr' (Did you mean \"lr\" instead of \"lrr\"?)"),
    ("--config.model.layout=['m1', ['T2']", 1, "train.py: error: layout: cannot parse"),
])
def test_train_py_config_mistakes_are_one_line(arg, status, message, tmp_path):
  proc = _train(arg, f"--workdir={tmp_path}")
  assert proc.returncode == status, proc.stderr
  assert "Traceback" not in proc.stderr, proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith(message), proc.stderr


def test_one_line_messages():
  nested = ValueError("Error whilst parsing config file:\n\nTraceback (most recent call last):\n  File x\n"
                      "ValueError: unknown config variant 'huge' (known: 'tiny')")
  assert entry_errors.one_line(nested) == "ValueError: unknown config variant 'huge' (known: 'tiny')"
  assert entry_errors.one_line(AttributeError(KeyError("'lrr'\nDid you mean \"lr\"?"))) == (
      "unknown config key 'lrr' (Did you mean \"lr\"?)")
  assert entry_errors.one_line(FileNotFoundError("no checkpoint under /x")) == "no checkpoint under /x"


def test_only_errors_raised_by_hnet_count_as_the_users_mistakes():
  with pytest.raises(ValueError) as ours:
    parse_layout("['m1', ['T2']")
  assert entry_errors.raised_by_hnet(ours.value)
  with pytest.raises(ValueError) as theirs:
    np.zeros(3).reshape(2, 2)  # a bug deep in a library keeps its traceback
  assert not entry_errors.raised_by_hnet(theirs.value)
