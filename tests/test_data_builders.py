"""TFDS builders (array_record, no TensorFlow) and pipeline.prepare: stats, reuse, bad input."""
import os
import sys

import pytest

from hnet.data import builders, pipeline
from tests.helpers import data_config, write_jsonl

# Figures from hnet/data/builtin/SOURCES.md.
BUILTIN = {"train": {"documents": 4345, "bytes": 22_382_986}, "validation": {"documents": 221, "bytes": 1_288_305}}


@pytest.fixture(scope="module")
def builtin_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("builtin")


def test_builtin_corpus_builds_offline_without_tensorflow(builtin_dir):
  c = data_config(builtin_dir)
  assert c.dataset == "builtin"  # the default
  stats = pipeline.prepare(c)
  assert stats["splits"] == BUILTIN
  assert os.path.isdir(os.path.join(c.data_dir, "hnet_builtin"))
  assert any(f.endswith(".array_record-00000-of-00001") for f in os.listdir(stats["data_dir"]))
  assert "tensorflow" not in sys.modules


def test_builtin_end_to_end(builtin_dir):
  c = data_config(builtin_dir, seq_len=256)
  pipeline.prepare(c)  # reuses the build of the test above
  batch = next(pipeline.make_train_iterator(c, global_batch_size=4, seed=0, process_index=0, process_count=1))
  assert batch["inputs"].shape == (4, 256) and batch["loss_mask"].sum() > 0
  ev = pipeline.make_eval_iterator(c, split="validation", global_batch_size=64, process_index=0, process_count=1)
  total = sum(float(b["loss_mask"].sum()) for b in ev)
  assert total == BUILTIN["validation"]["bytes"] + BUILTIN["validation"]["documents"]
  assert "tensorflow" not in sys.modules


def _corpus(tmp_path):
  d = tmp_path / "corpus"
  d.mkdir()
  write_jsonl(d / "a.jsonl", [f"doc {i} " * (i % 5) for i in range(40)])
  (d / "b.txt").write_text("para one\n\n" * 500)  # 5000 bytes: cut into documents
  (d / "empty.txt").write_text("")
  return d


def test_text_builder_counts_reuses_and_notices_changes(tmp_path, monkeypatch):
  d = _corpus(tmp_path)
  c = data_config(tmp_path, dataset="text", text_paths=str(d), txt_doc_bytes=1000)
  stats = pipeline.prepare(c)
  splits = stats["splits"]
  expected_bytes = sum(len(f"doc {i} " * (i % 5)) for i in range(40)) + 5000
  assert splits["train"]["bytes"] + splits["validation"]["bytes"] == expected_bytes
  assert splits["train"]["documents"] + splits["validation"]["documents"] == 40 + 5
  assert splits["validation"]["documents"] >= 1
  assert stats["empty_files"] == [str(d / "empty.txt")]

  def fail(*args, **kwargs):
    raise AssertionError("prepared data should have been reused")
  with monkeypatch.context() as m:
    m.setattr(builders.HnetText, "_split_generators", fail)
    assert pipeline.prepare(c) == stats  # same files: reused

  write_jsonl(d / "a.jsonl", ["changed"])
  with pytest.raises(FileNotFoundError, match="run pipeline.prepare"):  # never the stale copy
    pipeline.make_train_iterator(c, global_batch_size=2, seed=0, process_index=0, process_count=1)
  stats2 = pipeline.prepare(c)
  assert stats2["config"] != stats["config"]
  assert sum(s["documents"] for s in stats2["splits"].values()) == 1 + 5


def test_prepare_tolerates_a_concurrent_writer(builtin_dir, monkeypatch):
  c = data_config(builtin_dir)
  stats = pipeline.prepare(c)

  def lose_the_race(self, *args, **kwargs):
    raise OSError("Directory not empty: another process renamed its copy first")
  monkeypatch.setattr(builders.HnetBuiltin, "download_and_prepare", lose_the_race)
  assert pipeline.prepare(c) == stats


def test_text_builder_without_documents(tmp_path):
  (tmp_path / "empty.txt").write_text("")
  c = data_config(tmp_path, dataset="text", text_paths=str(tmp_path / "empty.txt"))
  with pytest.raises(ValueError, match="no documents in 1 file"):
    pipeline.prepare(c)


def test_text_builder_refuses_binary_files(tmp_path):
  path = tmp_path / "model.txt"
  path.write_bytes(b"weights\0\0\0\1")
  c = data_config(tmp_path, dataset="text", text_paths=str(path))
  with pytest.raises(ValueError, match=f"{path} looks binary"):
    pipeline.prepare(c)


def test_text_builder_wrong_field(tmp_path):
  path = write_jsonl(tmp_path / "a.jsonl", ["x"], key="body")
  c = data_config(tmp_path, dataset="text", text_paths=path)
  with pytest.raises(ValueError, match="a.jsonl:1: no field data.text_key='text'"):
    pipeline.prepare(c)
  c.text_key = "body"
  assert pipeline.prepare(c, need=("train",))["splits"]["train"]["documents"] == 1  # one byte: no validation


def test_missing_path(tmp_path):
  c = data_config(tmp_path, dataset="text", text_paths=str(tmp_path / "nope" / "*.txt"))
  with pytest.raises(FileNotFoundError, match="nope"):
    pipeline.prepare(c)


@pytest.mark.parametrize("overrides, error, match", [
    ({"dataset": "no_such_dataset"}, ValueError, "unknown data.dataset='no_such_dataset'"),
    ({"seq_len": 1}, ValueError, "data.seq_len=1 must be at least 2"),
    ({"invalid_utf8": "drop"}, ValueError, "data.invalid_utf8='drop'"),
    ({"dataset": "text"}, ValueError, "needs data.text_paths"),
    ({"dataset": "lm1b"}, FileNotFoundError, r"tfds.builder\('lm1b', .*file_format='array_record'"),
])
def test_config_errors(tmp_path, overrides, error, match):
  with pytest.raises(error, match=match):
    pipeline.prepare(data_config(tmp_path, **overrides))


def test_data_dir_default(monkeypatch):
  c = data_config("unused", data_dir="")
  monkeypatch.setenv("HNET_DATA_DIR", "/tmp/somewhere")
  assert builders.data_dir(c) == "/tmp/somewhere"
  monkeypatch.delenv("HNET_DATA_DIR")
  assert builders.data_dir(c) == os.path.expanduser("~/.cache/hnet/tfds")


def test_text_builder_logs_no_custom_config_warning(tmp_path, caplog):
  (tmp_path / "a.txt").write_text("hi")
  builders.get_builder(data_config(tmp_path, dataset="text", text_paths=str(tmp_path / "a.txt")))
  assert not [r for r in caplog.records if "custom data configuration" in r.getMessage()]


def test_one_small_file_is_cut_into_train_and_validation(tmp_path):
  """A single .txt under data.txt_doc_bytes is one document: its tail is held out, so training just works."""
  text = "".join(f"Line {i}: a small corpus, one file.\n" for i in range(400)).encode()  # < 64 KiB
  (tmp_path / "small.txt").write_bytes(text)
  c = data_config(tmp_path, dataset="text", text_paths=str(tmp_path / "small.txt"))
  splits = pipeline.prepare(c)["splits"]
  assert splits["train"]["documents"] == splits["validation"]["documents"] == 1
  assert splits["train"]["bytes"] + splits["validation"]["bytes"] == len(text)
  held_out = builders.get_builder(c).as_data_source(split="validation")[0]["text"]
  assert text.endswith(held_out) and 0.025 * len(text) < len(held_out) < 0.1 * len(text)


def test_no_validation_split_is_refused_when_prepared_with_the_fix(tmp_path):
  (tmp_path / "small.txt").write_text("one small document\n")
  c = data_config(tmp_path, dataset="text", text_paths=str(tmp_path / "small.txt"), validation_fraction=0.0)
  with pytest.raises(ValueError, match=r"split 'validation' is not in hnet_text \(splits: \['train'\]\); "
                     r"data.validation_fraction=0 holds out nothing: set it > 0"):
    pipeline.prepare(c)
  assert pipeline.prepare(c, need=("train",))["splits"]["train"]["documents"] == 1
