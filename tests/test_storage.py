"""Paths through one file-system layer (hnet/storage.py): bucket paths checked and refused clearly, and a `:tiny`
run with its work dir and text data in a GCS bucket served by a local emulator (tests/gcs_emulator.py):
stopped, resumed exactly, evaluated from the bucket, a corrupt step in the bucket moved aside."""
import gzip
import json
import logging
import lzma
import os

import jax
import numpy as np
import pytest

from hnet import storage
from hnet.data import sources
from hnet.train import checksums, entry_errors, runs, trainer
from tests import gcs_emulator
from tests.helpers import load_config


# ---------------------------------------------------------------------------------------------
# Without a bucket
# ---------------------------------------------------------------------------------------------
def test_local_paths_resolve_as_before(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert storage.resolve("runs/x") == os.path.join(str(tmp_path), "runs", "x")
  assert storage.resolve("~/y") == os.path.join(os.path.expanduser("~"), "y")
  assert storage.resolve("gs://bucket/run/") == "gs://bucket/run"
  assert not storage.is_remote("runs/x") and storage.is_remote("gs://b/x") and storage.is_remote("s3://b/x")


def test_other_url_schemes_are_refused_in_one_line():
  with pytest.raises(ValueError, match=r"unsupported storage az:// \(local paths, gs:// and s3:// are\)"):
    storage.resolve("az://container/run")


def test_a_missing_client_names_the_extra(monkeypatch):
  real = storage.importlib.util.find_spec
  absent = lambda name, *a: None if name in ("gcsfs", "s3fs") else real(name, *a)  # noqa: E731
  monkeypatch.setattr(storage.importlib.util, "find_spec", absent)
  with pytest.raises(storage.MissingExtra) as gs:
    storage.path("gs://bucket/run")
  assert str(gs.value) == "gs://bucket/run needs gcsfs: pip install 'hnet[gcs]'"
  with pytest.raises(storage.MissingExtra, match=r"pip install 'hnet\[s3\]'$"):
    sources.resolve("s3://bucket/corpus/*.txt")
  # The entry points print it as one line (a RuntimeError raised by hnet).
  assert entry_errors.raised_by_hnet(gs.value) and entry_errors.one_line(gs.value) == str(gs.value)


def test_a_data_dir_in_a_bucket_is_refused_in_one_line():
  from hnet.data import builders  # pylint: disable=import-outside-toplevel
  c = load_config("hnet_1stage")
  c.data.data_dir = "gs://bucket/tfds"
  with pytest.raises(ValueError, match=r"data.data_dir='gs://bucket/tfds': prepared data \(array_record\) must be"):
    builders.data_dir(c.data)


# ---------------------------------------------------------------------------------------------
# Against the emulator
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
  """gs://<bucket> on a local emulator, every client pointed at it for this module; the emulator stops after."""
  log_path = str(tmp_path_factory.mktemp("emulator") / "emulator.log")
  with gcs_emulator.running(log_path=log_path) as url:
    env = gcs_emulator.client_env(url)
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
      yield f"gs://{gcs_emulator.BUCKET}"
    finally:
      for k, v in before.items():
        if v is None:
          os.environ.pop(k, None)
        else:
          os.environ[k] = v


@pytest.fixture(scope="module")
def corpus(bucket):
  """gs://.../corpus: the first documents of the embedded corpus as three text files, one gzip, one xz."""
  from importlib import resources  # pylint: disable=import-outside-toplevel
  with (resources.files("hnet.data") / "builtin" / "train.jsonl.xz").open("rb") as raw, lzma.open(raw, "rt") as f:
    docs = [json.loads(next(f))["text"] for _ in range(60)]
  parts = {"a.txt": None, "b.txt.gz": gzip.compress, "c.txt.xz": lzma.compress}
  for i, (name, compress) in enumerate(parts.items()):
    data = "\n\n".join(docs[i::3]).encode()
    storage.path(f"{bucket}/corpus/{name}").write_bytes(compress(data) if compress else data)
  storage.path(f"{bucket}/corpus/notes.bin").write_bytes(b"\0not text")  # not matched by the glob below
  return f"{bucket}/corpus"


def test_text_paths_in_a_bucket_expand_and_read_like_local_ones(corpus, tmp_path):
  globbed = sources.resolve(f"{corpus}/*.txt*")
  assert globbed == [f"{corpus}/a.txt", f"{corpus}/b.txt.gz", f"{corpus}/c.txt.xz"]
  assert sources.resolve(corpus) == globbed  # a directory: the files with a text suffix
  assert sources.resolve(f"{corpus}/**/a.txt") == [f"{corpus}/a.txt"]
  with pytest.raises(FileNotFoundError, match="does not exist"):
    sources.resolve(f"{corpus}/missing.txt")
  local = tmp_path / "b.txt"  # the gzip member read through the bucket equals the same bytes read locally
  with storage.open_file(f"{corpus}/b.txt.gz", "rb") as f:
    local.write_bytes(gzip.decompress(f.read()))
  assert list(sources.read_txt(f"{corpus}/b.txt.gz", 4096)) == list(sources.read_txt(str(local), 4096))
  assert sources.fingerprint(globbed) == sources.fingerprint(globbed) != sources.fingerprint(globbed[:2])


def _config(data_dir, text_glob, steps=4):
  c = load_config("hnet_1stage")
  c.data.dataset = "text"
  c.data.text_paths = text_glob
  c.data.data_dir = data_dir  # the prepared copy stays local (array_record is read with local file I/O)
  c.data.txt_doc_bytes = 2048  # many small documents: a small validation split (5% of them)
  c.train.num_steps = steps
  c.train.batch_size = 8  # divisible by the 8 test devices
  c.train.log_every = 1
  c.train.eval_every = steps
  c.train.eval_batches = 1
  c.train.full_final_eval = False
  c.model.remat = "none"  # compiles faster; no effect on the numbers
  c.ckpt.every = 100
  c.ckpt.async_save = False
  return c


def _losses(workdir):
  with storage.open_file(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def test_a_run_in_a_bucket_resumes_exactly_and_evaluates_from_there(bucket, corpus, tmp_path, caplog):
  from hnet.evals import commands  # pylint: disable=import-outside-toplevel
  c = _config(str(tmp_path / "tfds"), f"{corpus}/*.txt*")
  local = str(tmp_path / "straight")
  straight = trainer.train_and_evaluate(c, local, progress=False)
  remote = f"{bucket}/run"
  with caplog.at_level(logging.INFO, logger="hnet.train.workdir_lock"):
    first = trainer.train_and_evaluate(c, remote, progress=False, stop_after=2)
  assert first["step"] == 2 and first["stopped"] == "stop_after=2"
  assert any("is in a bucket: not locked" in r.getMessage() for r in caplog.records)
  second = trainer.train_and_evaluate(c, remote, progress=False)
  assert second["step"] == 4

  a, b = _losses(local), _losses(remote)
  assert sorted(a) == sorted(b) == [1, 2, 3, 4]
  assert a == b, "the resumed run in the bucket must reproduce the local uninterrupted run bit for bit"
  assert straight["eval"]["bits_per_byte"] == second["eval"]["bits_per_byte"]

  run = storage.path(remote)
  assert json.loads((run / "config.json").read_text())["data"]["text_paths"] == f"{corpus}/*.txt*"
  assert any(p.name.startswith("events.out.tfevents") for p in (run / "tensorboard").iterdir())
  assert not (run / "train.lock").exists()
  steps = sorted(p.name for p in (run / "checkpoints").iterdir())
  assert steps == ["2", "4"]
  assert all(checksums.verify(f"{remote}/checkpoints/{s}") for s in steps)  # SHA256SUMS written and read back

  # eval.py's loading and bpb from the bucket: the parameters the local run ended with, its result in the bucket
  assert jax.tree.all(jax.tree.map(np.array_equal, runs.load(remote).params, runs.load(local).params))
  lines = []
  result = commands.main("bpb", workdir=remote, echo=lines.append)
  assert result["checkpoint"] == f"{remote}/checkpoints/4"
  out = f"{remote}/eval/bpb_step4_validation.json"
  assert f"wrote {out}" in lines
  assert json.loads(storage.path(out).read_text())["bits_per_byte"] == result["bits_per_byte"]

  # A corrupt step in the bucket is moved aside (objects copied, then deleted) and the run goes on from step 2.
  step_dir = f"{remote}/checkpoints/4"
  victim = next(f for f in storage.files_under(step_dir) if "/d/" in f)
  data = storage.path(f"{step_dir}/{victim}").read_bytes()
  storage.path(f"{step_dir}/{victim}").write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])
  with pytest.raises(checksums.CorruptCheckpoint, match="does not match its checksum"):
    checksums.verify(step_dir)
  again = trainer.train_and_evaluate(c, remote, progress=False)
  assert again["step"] == 4 and _losses(remote) == a
  names = sorted(p.name for p in (run / "checkpoints").iterdir())
  assert names[:2] == ["2", "4"] and names[2].startswith("4.corrupt-") and len(names) == 3


def test_a_missing_bucket_is_a_one_line_error(bucket):
  with pytest.raises(OSError, match=r"--workdir='gs://no-such-bucket/run' is not writable .*check the bucket"):
    entry_errors.check_writable("gs://no-such-bucket/run", "--workdir")
