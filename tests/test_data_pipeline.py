"""grain pipelines: batch format, exact eval coverage, sharding, determinism, checkpoints."""
import collections
import copy
import json
import sys

import numpy as np
import pytest

from hnet.data import pipeline
from tests.helpers import data_config, doc_id, documents, pieces, target_bytes, write_jsonl

L = 32
N_DOCS = 60


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """A prepared 'text' corpus: short and long (> L) documents, one with invalid UTF-8."""
  tmp = tmp_path_factory.mktemp("corpus")
  texts = documents(N_DOCS, max_len=3 * L)
  write_jsonl(tmp / "docs.jsonl", texts)
  (tmp / "bad.txt").write_bytes(b"<999>invalid \xff\xfe utf-8 " + b"x" * 200)
  c = data_config(tmp, dataset="text", text_paths=f"{tmp}/docs.jsonl,{tmp}/bad.txt", seq_len=L,
                  validation_fraction=0.2)
  pipeline.prepare(c)
  return c, texts + [b"<999>invalid \xff\xfe utf-8 " + b"x" * 200]


@pytest.fixture(scope="module")
def short_corpus(tmp_path_factory):
  """Documents shorter than L, so each piece is a whole document, identified by its <i> prefix."""
  tmp = tmp_path_factory.mktemp("short")
  texts = documents(30, seed=1, max_len=L - 8, with_empty=False, ascii_only=True)
  write_jsonl(tmp / "docs.jsonl", texts)
  c = data_config(tmp, dataset="text", text_paths=str(tmp / "docs.jsonl"), seq_len=L, validation_fraction=0.3)
  pipeline.prepare(c)
  return c, texts


def _split_texts(c, split):
  """The documents of a prepared split, straight from the TFDS source."""
  source, key = pipeline._source(c, split)  # pylint: disable=protected-access
  return [source[i][key] for i in range(len(source))]


def _with(c, **overrides):
  c = copy.deepcopy(c)
  for k, v in overrides.items():
    setattr(c, k, v)
  return c


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_same(batches_a, batches_b):
  assert len(batches_a) == len(batches_b)
  for a, b in zip(batches_a, batches_b):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_train_batch_format(corpus):
  c, _ = corpus
  batch = next(pipeline.make_train_iterator(c, global_batch_size=8, seed=0, process_index=0, process_count=2))
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
      "inputs": ((4, L), np.int32), "targets": ((4, L), np.int32), "segment_ids": ((4, L), np.int32),
      "loss_mask": ((4, L), np.float32)}
  assert batch["inputs"].min() >= 0 and batch["inputs"].max() <= 255
  seg, mask = batch["segment_ids"], batch["loss_mask"]
  # Within a piece the next input is this position's target; pieces start at position 0 with BOS
  # or continue a document (split pieces overlap by one token).
  same = (seg[:, 1:] == seg[:, :-1]) & (seg[:, :-1] > 0)
  np.testing.assert_array_equal(batch["targets"][:, :-1][same], batch["inputs"][:, 1:][same])
  assert set(np.unique(seg[:, 0])) <= {0, 1}  # each row numbers its pieces from 1
  np.testing.assert_array_equal(mask[:, :-1], same.astype(np.float32))
  assert mask.sum() > 0.9 * mask.size  # packed densely


@pytest.mark.parametrize("policy", ["keep", "replace"])
def test_eval_covers_every_target_exactly_once(corpus, policy):
  c = _with(corpus[0], invalid_utf8=policy)
  for split in ("train", "validation"):
    texts = _split_texts(c, split)
    batches = list(pipeline.make_eval_iterator(c, split=split, global_batch_size=4, process_index=0,
                                               process_count=1))
    assert sum(float(b["loss_mask"].sum()) for b in batches) == pipeline.count_targets(texts, policy)
    # The multiset of counted targets is every document's bytes plus its EOS.
    expected = collections.Counter()
    for t in texts:
      expected.update(pipeline.doc_bytes.to_bytes(t, policy) + b"\xff")
    got = collections.Counter(x for b in batches for x in target_bytes(b))
    assert got == expected
    assert all(b["inputs"].shape == (4, L) for b in batches)  # last batch padded, not dropped


def test_eval_is_deterministic_and_reiterable(corpus):
  c, _ = corpus
  ev = pipeline.make_eval_iterator(c, split="validation", global_batch_size=4, process_index=0, process_count=1)
  first, second = list(ev), list(ev)
  _assert_same(first, second)
  assert len(ev) == len(first)


@pytest.mark.parametrize("process_count", [2, 3])
def test_eval_processes_split_the_data(short_corpus, process_count):
  c, _ = short_corpus
  texts = _split_texts(c, "train")
  per_process = [list(pipeline.make_eval_iterator(c, split="train", global_batch_size=2 * process_count,
                                                  process_index=p, process_count=process_count))
                 for p in range(process_count)]
  assert len({len(b) for b in per_process}) == 1  # the same number of eval steps everywhere
  seen = [[doc_id(p) for b in batches for p in pieces(b)] for batches in per_process]
  flat = [i for s in seen for i in s]
  assert len(flat) == len(set(flat))  # disjoint
  assert sorted(flat) == sorted(doc_id(b"\xfe" + t) for t in texts)  # union = the split
  assert sum(float(b["loss_mask"].sum()) for bs in per_process for b in bs) == pipeline.count_targets(texts)


def test_train_same_seed_same_batches(corpus):
  c, _ = corpus
  kw = dict(global_batch_size=4, process_index=0, process_count=1)
  a = _take(pipeline.make_train_iterator(c, seed=3, **kw), 6)
  _assert_same(a, _take(pipeline.make_train_iterator(c, seed=3, **kw), 6))
  b = _take(pipeline.make_train_iterator(c, seed=4, **kw), 6)
  assert any(not np.array_equal(x["inputs"], y["inputs"]) for x, y in zip(a, b))


def test_train_processes_read_disjoint_shards(short_corpus):
  c, _ = short_corpus
  n_docs = len(_split_texts(c, "train"))
  seen = []
  for p in range(2):
    it = pipeline.make_train_iterator(c, global_batch_size=4, seed=0, process_index=p, process_count=2)
    seen.append({doc_id(x) for b in _take(it, 3 * n_docs // 4 + 4) for x in pieces(b)})
  assert not seen[0] & seen[1]
  assert len(seen[0] | seen[1]) == n_docs


def test_train_reshuffles_each_epoch(short_corpus):
  # One packing bin and no row shuffle: rows come in document order.
  c = _with(short_corpus[0], packing_bins=1, shuffle_window_mb=0)
  n_docs = len(_split_texts(c, "train"))
  it = pipeline.make_train_iterator(c, global_batch_size=1, seed=0, process_index=0, process_count=1)
  order = []
  while len(order) < 2 * n_docs:
    order += [doc_id(x) for x in pieces(next(it))]
  epoch1, epoch2 = order[:n_docs], order[n_docs:2 * n_docs]
  assert sorted(epoch1) == sorted(epoch2) and len(set(epoch1)) == n_docs
  assert epoch1 != epoch2


@pytest.mark.parametrize("k", [1, 7, 40])  # 40 batches of 4 rows cross epoch boundaries
def test_train_restores_from_state(short_corpus, k):
  c, _ = short_corpus
  kw = dict(global_batch_size=4, seed=0, process_index=0, process_count=1)
  it = pipeline.make_train_iterator(c, **kw)
  _take(it, k)
  state = json.loads(json.dumps(it.get_state()))  # what grain's checkpoint handler writes
  reference = _take(it, 5)
  restored = pipeline.make_train_iterator(c, **kw)
  restored.set_state(state)
  _assert_same(reference, _take(restored, 5))


def test_train_restores_through_grain_checkpoint(corpus, tmp_path):
  import grain  # pylint: disable=import-outside-toplevel
  from etils import epath  # pylint: disable=import-outside-toplevel
  c = _with(corpus[0], prefetch=2)  # through the thread prefetch, as in training
  kw = dict(global_batch_size=4, seed=0, process_index=0, process_count=1)
  it = pipeline.make_train_iterator(c, **kw)
  _take(it, 9)
  grain.checkpoint.CheckpointHandler().save(epath.Path(tmp_path), item=it)
  reference = _take(it, 4)
  restored = pipeline.make_train_iterator(c, **kw)
  grain.checkpoint.CheckpointHandler().restore(epath.Path(tmp_path), item=restored)
  _assert_same(reference, _take(restored, 4))


def test_worker_processes_give_the_same_batches(short_corpus):
  c = short_corpus[0]
  kw = dict(global_batch_size=4, seed=0, process_index=0, process_count=1)
  reference = _take(pipeline.make_train_iterator(c, **kw), 8)
  c = _with(c, worker_count=1)  # one worker reads the whole shard: same order as in-process
  it = pipeline.make_train_iterator(c, **kw)
  got = _take(it, 5)
  state = it.get_state()
  got += _take(it, 3)
  it.close()
  _assert_same(reference, got)
  it = pipeline.make_train_iterator(c, **kw)
  it.set_state(state)
  _assert_same(reference[5:], _take(it, 3))
  it.close()


@pytest.mark.parametrize("kwargs, match", [
    (dict(global_batch_size=6, process_index=0, process_count=4), "global batch size 6 must be a positive multiple"),
    (dict(global_batch_size=4, process_index=2, process_count=2), "process_index=2 is not in"),
])
def test_batch_and_process_errors(corpus, kwargs, match):
  c, _ = corpus
  with pytest.raises(ValueError, match=match):
    pipeline.make_train_iterator(c, seed=0, **kwargs)
  with pytest.raises(ValueError, match=match):
    pipeline.make_eval_iterator(c, split="validation", **kwargs)


def test_unknown_split(corpus):
  c, _ = corpus
  with pytest.raises(ValueError, match="split 'test' is not in hnet_text"):
    pipeline.make_eval_iterator(c, split="test", global_batch_size=2, process_index=0, process_count=1)


def test_more_processes_than_documents(short_corpus):
  c, _ = short_corpus
  with pytest.raises(ValueError, match="fewer than the 64 processes"):
    pipeline.make_train_iterator(c, global_batch_size=64, seed=0, process_index=0, process_count=64)


def test_process_defaults_come_from_jax(corpus):
  c, _ = corpus
  batch = next(pipeline.make_train_iterator(c, global_batch_size=2, seed=0))
  assert batch["inputs"].shape == (2, L)


def test_prepared_tfds_dataset_by_name(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  c = data_config(tmp_path, dataset="lm1b", text_key="text", seq_len=16, eval_split="test")
  with tfds.testing.mock_data(num_examples=12):
    batch = next(pipeline.make_train_iterator(c, global_batch_size=2, seed=0, process_index=0, process_count=1))
    assert batch["inputs"].shape == (2, 16) and batch["loss_mask"].sum() > 0
    texts = [pipeline._source(c, "test")[0][i]["text"] for i in range(12)]  # pylint: disable=protected-access
    ev = pipeline.make_eval_iterator(c, split="test", global_batch_size=2, process_index=0, process_count=1)
    assert sum(float(b["loss_mask"].sum()) for b in ev) == pipeline.count_targets(texts)
    c = _with(c, text_key="body")
    with pytest.raises(ValueError, match=r"data.text_key='body' is not a feature of lm1b \(features: \['text'\]\)"):
      pipeline.make_eval_iterator(c, split="test", global_batch_size=2, process_index=0, process_count=1)
  assert "tensorflow" not in sys.modules


def test_pieces_helper():
  # Row tokens [BOS a EOS BOS b]: the second piece's last token is only a target.
  batch = {"inputs": np.array([[254, 97, 255, 254]]), "targets": np.array([[97, 255, 254, 98]]),
           "segment_ids": np.array([[1, 1, 1, 2]]), "loss_mask": np.array([[1, 1, 0, 1]])}
  assert pieces(batch) == [bytes([254, 97, 255]), bytes([254, 98])]
