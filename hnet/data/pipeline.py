"""grain input pipelines: the API the trainer calls.

  prepare(data_cfg[, need]) -> stats         build or reuse the TFDS data, documents/bytes per split (need: splits)
  make_train_iterator(data_cfg, ...)         infinite, shuffled, checkpointable grain iterator
  make_eval_iterator(data_cfg, split=...)    finite, deterministic, covers the split once

Train: source[p::P] -> shuffle (new order each epoch) -> encode + split into pieces ->
first-fit packing of each document's last piece (full pieces are rows already and ride
along) -> rows shuffled in windows -> batches of B -> prefetch. Batches are dicts of numpy
arrays (B = global_batch_size // process_count, L = data.seq_len) as hnet/data/batch.py
states: inputs, targets, segment_ids (int32, (B, L)) and loss_mask (float32, (B, L)).
"""
import functools
import logging
import math
from typing import Sequence

from hnet.data import bytes as doc_bytes, rows as rows_lib

log = logging.getLogger(__name__)

READ_THREADS = 2  # threads reading documents ahead of packing (the GIL caps the gain)
READ_BUFFER = 8  # documents read ahead (grain polls each one per element: keep it short)


# ---------------------------------------------------------------------------------------------
# Checks and data sources
# ---------------------------------------------------------------------------------------------
def _check_config(data_cfg) -> None:
  if data_cfg.seq_len < 2:
    raise ValueError(f"data.seq_len={data_cfg.seq_len} must be at least 2")
  if data_cfg.seq_len > rows_lib.MAX_SEQ_LEN:
    raise ValueError(f"data.seq_len={data_cfg.seq_len} must be at most {rows_lib.MAX_SEQ_LEN}")
  doc_bytes.check_policy(data_cfg.invalid_utf8)


def _text_key(data_cfg, builder) -> str:
  """The feature holding the text: 'text' for our builders, data.text_key for TFDS datasets."""
  key = "text" if data_cfg.dataset in ("builtin", "text") else data_cfg.text_key
  features = builder.info.features
  if key not in features:
    raise ValueError(f"data.text_key={key!r} is not a feature of {builder.name} (features: {sorted(features)})")
  return key


def _split_name(split: str) -> str:
  return split.split("[")[0]


def _source(data_cfg, split: str):
  """(random-access source of one split, text key)."""
  from hnet.data import builders  # pylint: disable=import-outside-toplevel  (tfds is heavy)
  builder = builders.get_builder(data_cfg)
  if data_cfg.dataset in ("builtin", "text") and not builder.is_prepared():
    raise FileNotFoundError(_not_prepared_message(data_cfg, builder))
  key = _text_key(data_cfg, builder)
  known = builder.info.splits.keys() if builder.info.splits else ()
  if known and _split_name(split) not in known:
    raise ValueError(f"split {split!r} is not in {builder.name} (splits: {sorted(known)})"
                     + _split_advice(data_cfg, split))
  try:
    return builder.as_data_source(split=split), key
  except (AssertionError, FileNotFoundError, KeyError, NotImplementedError) as e:
    raise FileNotFoundError(_not_prepared_message(data_cfg, builder) + f" ({str(e).splitlines()[0]})") from None


def _split_advice(data_cfg, split: str) -> str:
  """What to change: the config key that chose the missing split (none when eval.py --split did)."""
  keys = [f"data.{k}" for k in ("train_split", "eval_split") if data_cfg.get(k) == split]
  if data_cfg.dataset == "text" and _split_name(split) == "validation":
    if not data_cfg.validation_fraction > 0:
      return "; data.validation_fraction=0 holds out nothing: set it > 0 (e.g. 0.05), or data.eval_split=train"
    return "; the text is too short to hold any of it out: add text, or set data.eval_split=train"
  return f"; set {' / '.join(keys)}" if keys else ""


def _not_prepared_message(data_cfg, builder) -> str:
  if data_cfg.dataset in ("builtin", "text"):
    return (f"data for data.dataset={data_cfg.dataset!r} is not prepared under {builder.data_dir} (or its input "
            "files changed since): run pipeline.prepare")
  return (f"TFDS dataset {data_cfg.dataset!r} is not prepared in array_record format under {builder.data_dir}; "
          f"prepare it once with: {_prepare_command(data_cfg)}")


def _prepare_command(data_cfg) -> str:
  from hnet.data import builders  # pylint: disable=import-outside-toplevel
  return (f"python -c \"import tensorflow_datasets as tfds; tfds.builder('{data_cfg.dataset}', "
          f"data_dir='{builders.data_dir(data_cfg)}', file_format='array_record').download_and_prepare()\"")


def prepare(data_cfg, need: Sequence[str] | None = None) -> dict:
  """Builds (or reuses) the TFDS data for data.dataset; returns documents and bytes per split.

  The splits in `need` (default data.train_split and data.eval_split) must exist.
  """
  from hnet.data import builders  # pylint: disable=import-outside-toplevel
  _check_config(data_cfg)
  builder = builders.get_builder(data_cfg)
  if data_cfg.dataset in ("builtin", "text"):
    try:
      builder.download_and_prepare(file_format="array_record")
    except OSError:
      # Several processes preparing one shared data dir: the first rename wins, the others reuse it.
      builder = builders.get_builder(data_cfg)
      if not builder.is_prepared():
        raise
  elif not builder.is_prepared():
    raise FileNotFoundError(_not_prepared_message(data_cfg, builder))
  elif builder.info.file_format is not None and builder.info.file_format.value != "array_record":
    raise ValueError(f"TFDS dataset {data_cfg.dataset!r} under {builder.data_dir} is stored as "
                     f"{builder.info.file_format.value}; random access needs array_record: move that copy away "
                     f"and run {_prepare_command(data_cfg)}")
  _text_key(data_cfg, builder)
  counted = (builder.info.metadata or {}).get("splits", {})
  splits = {}
  for name, info in builder.info.splits.items():
    # Our builders count text bytes while writing; for other datasets only the records are known.
    splits[name] = {"documents": int(info.num_examples), "bytes": counted.get(name, {}).get("bytes")}
  stats = {"dataset": builder.name, "config": builder.builder_config.name if builder.builder_config else None,
           "data_dir": str(builder.data_path), "splits": splits,
           "empty_files": list((builder.info.metadata or {}).get("empty_files", []))}
  log.info("data: %s (%s): %s", stats["dataset"], stats["data_dir"], ", ".join(
      f"{k} {v['documents']:,} documents" + (f", {v['bytes']:,} bytes" if v["bytes"] is not None else "")
      for k, v in splits.items()))
  for path in stats["empty_files"]:
    log.warning("data: %s holds no documents; skipped", path)
  for split in (data_cfg.train_split, data_cfg.eval_split) if need is None else need:
    if _split_name(split) not in splits:  # now, not after the model is built
      raise ValueError(f"split {split!r} is not in {stats['dataset']} (splits: {sorted(splits)})"
                       + _split_advice(data_cfg, split))
  return stats


# ---------------------------------------------------------------------------------------------
# Pipeline stages (module-level callables so mp_prefetch workers can pickle them)
# ---------------------------------------------------------------------------------------------
def _document(example: dict, *, text_key: str, seq_len: int, invalid_utf8: str) -> dict:
  """A source record -> its last piece (to pack) and its full pieces (rows as they are)."""
  full_KR, last = doc_bytes.split(doc_bytes.encode(example[text_key], invalid_utf8), seq_len)
  return {"tokens": last, "full": full_KR}


def _process_shard(process_index, process_count) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # pylint: disable=import-outside-toplevel  (only when the caller does not say)
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} is not in [0, process_count={process_count})")
  return process_index, process_count


def _per_process_batch(global_batch_size: int, process_count: int) -> int:
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(f"global batch size {global_batch_size} must be a positive multiple of the process "
                     f"count {process_count}")
  return global_batch_size // process_count


def _rows(docs, data_cfg, text_key: str, *, seed: int, shuffle_bins: bool):
  """MapDataset of source records -> IterDataset of row blocks {tokens, segment_ids} (K, L + 1)."""
  import grain  # pylint: disable=import-outside-toplevel
  R = data_cfg.seq_len + 1
  docs = docs.map(functools.partial(_document, text_key=text_key, seq_len=data_cfg.seq_len,
                                    invalid_utf8=data_cfg.invalid_utf8))
  ds = docs.to_iter_dataset(grain.ReadOptions(num_threads=READ_THREADS, prefetch_buffer_size=READ_BUFFER))
  ds = grain.experimental.FirstFitPackIterDataset(
      ds, length_struct={"tokens": R}, num_packing_bins=data_cfg.packing_bins, seed=seed,
      shuffle_bins=shuffle_bins, meta_features=("full",))
  return ds.map(rows_lib.block)


def _worker_prefetch(ds, data_cfg):
  """Runs the pipeline so far in data.worker_count grain worker processes (none: as it is)."""
  import grain  # pylint: disable=import-outside-toplevel
  if data_cfg.worker_count <= 0:
    return ds
  from absl import flags  # pylint: disable=import-outside-toplevel
  if not flags.FLAGS.is_parsed():  # grain workers read absl flags; outside an absl app use defaults
    flags.FLAGS.mark_as_parsed()
  return ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=data_cfg.worker_count))


# ---------------------------------------------------------------------------------------------
# Train
# ---------------------------------------------------------------------------------------------
def make_train_dataset(data_cfg, *, global_batch_size: int, seed: int, process_index: int | None = None,
                       process_count: int | None = None):
  """The train pipeline as a grain IterDataset (make_train_iterator iterates it)."""
  import grain  # pylint: disable=import-outside-toplevel
  _check_config(data_cfg)
  process_index, process_count = _process_shard(process_index, process_count)
  B = _per_process_batch(global_batch_size, process_count)
  source, text_key = _source(data_cfg, data_cfg.train_split)
  if len(source) < process_count:
    raise ValueError(f"split {data_cfg.train_split!r} of data.dataset={data_cfg.dataset!r} has {len(source)} "
                     f"documents, fewer than the {process_count} processes reading it")
  # Each process reads a disjoint shard; shuffle after repeat would mix epochs, so the
  # shuffle comes first and grain reseeds it for every epoch.
  docs = grain.MapDataset.source(source)[process_index::process_count]
  docs = docs.shuffle(seed=seed % 2**32).repeat()
  ds = _rows(docs, data_cfg, text_key, seed=seed, shuffle_bins=True)
  window = _shuffle_window_rows(data_cfg, B)
  ds = grain.experimental.RebatchIterDataset(ds, batch_size=window or B, drop_remainder=True)
  if window:
    ds = ds.random_map(rows_lib.shuffle, seed=(seed + 1) % 2**32)
  # Workers hand over whole windows of uint8 tokens + uint16 segment ids: few, compact
  # transfers (a batch at a time costs more in IPC than it takes to make with small rows).
  ds = _worker_prefetch(ds, data_cfg)
  if window:
    ds = grain.experimental.RebatchIterDataset(ds, batch_size=B, drop_remainder=True)
  ds = ds.map(rows_lib.to_batch)
  if data_cfg.worker_count <= 0 and data_cfg.prefetch > 0:
    ds = grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=data_cfg.prefetch)
  return ds


def _shuffle_window_rows(data_cfg, batch_size: int) -> int:
  """Rows per shuffle window: data.shuffle_window_mb of tokens, a multiple of the batch size."""
  if data_cfg.shuffle_window_mb <= 0:
    return 0
  rows = data_cfg.shuffle_window_mb * 2**20 / (data_cfg.seq_len + 1)
  return max(1, math.ceil(rows / batch_size)) * batch_size


def make_train_iterator(data_cfg, *, global_batch_size: int, seed: int, process_index: int | None = None,
                        process_count: int | None = None):
  """Infinite, checkpointable grain DatasetIterator of train batches (new shuffle each epoch)."""
  return iter(make_train_dataset(data_cfg, global_batch_size=global_batch_size, seed=seed,
                                 process_index=process_index, process_count=process_count))


# ---------------------------------------------------------------------------------------------
# Eval
# ---------------------------------------------------------------------------------------------
def _eval_rows(data_cfg, source, text_key: str, process_index: int, process_count: int, batch_size: int):
  """Deterministic IterDataset of (up to B) rows for one process's shard, or None if it is empty."""
  import grain  # pylint: disable=import-outside-toplevel
  docs = grain.MapDataset.source(source)[process_index::process_count]
  if len(docs) == 0:
    return None
  ds = _rows(docs, data_cfg, text_key, seed=0, shuffle_bins=False)
  return grain.experimental.RebatchIterDataset(ds, batch_size=batch_size)


_EVAL_BATCH_COUNTS: dict[tuple, tuple[int, ...]] = {}  # per split and settings; the data are immutable


def _eval_batch_counts(data_cfg, source, text_key: str, process_count: int, batch_size: int) -> tuple[int, ...]:
  """Batches each process's shard fills (every process must run the same number of eval steps)."""
  info = getattr(source, "dataset_info", None)  # the prepared data's directory names it exactly
  key = (str(info.data_dir) if info is not None else id(source), repr(source), text_key, data_cfg.seq_len,
         data_cfg.packing_bins, data_cfg.invalid_utf8, process_count, batch_size)
  if key not in _EVAL_BATCH_COUNTS:
    counts = []
    for p in range(process_count):
      ds = _eval_rows(data_cfg, source, text_key, p, process_count, batch_size)
      counts.append(0 if ds is None else sum(1 for _ in ds))
    _EVAL_BATCH_COUNTS[key] = tuple(counts)
  return _EVAL_BATCH_COUNTS[key]


class EvalIterator:
  """Batches of one split, in a fixed order, each document once; re-iterable.

  The last batch is padded with empty rows (loss_mask 0) and, with several processes, the
  shorter shards get empty batches so that every process yields `len(self)` batches.
  """

  def __init__(self, data_cfg, split: str, batch_size: int, process_index: int, process_count: int):
    self._cfg, self._batch_size = data_cfg, batch_size
    source, text_key = _source(data_cfg, split)
    self._rows = _eval_rows(data_cfg, source, text_key, process_index, process_count, batch_size)
    self._num_batches = None  # one process: whatever its shard fills (counted on demand)
    if process_count > 1:
      self._num_batches = max(_eval_batch_counts(data_cfg, source, text_key, process_count, batch_size))

  def __len__(self) -> int:
    if self._num_batches is None:
      self._num_batches = 0 if self._rows is None else sum(1 for _ in self._rows)
    return self._num_batches

  def __iter__(self):
    n = 0
    for rows in self._rows if self._rows is not None else ():
      yield rows_lib.to_batch(rows, self._batch_size)
      n += 1
    for _ in range((self._num_batches or 0) - n):
      yield rows_lib.empty_batch(self._batch_size, self._cfg.seq_len)


def make_eval_iterator(data_cfg, *, split: str, global_batch_size: int, process_index: int | None = None,
                       process_count: int | None = None) -> EvalIterator:
  """Finite, deterministic batches covering `split` exactly once (this process's disjoint part)."""
  _check_config(data_cfg)
  process_index, process_count = _process_shard(process_index, process_count)
  B = _per_process_batch(global_batch_size, process_count)
  return EvalIterator(data_cfg, split, B, process_index, process_count)


def count_targets(texts, invalid_utf8: str = "keep") -> int:
  """Targets a set of documents contributes: len(utf-8) + 1 each (every byte and the EOS)."""
  return sum(len(doc_bytes.to_bytes(t, invalid_utf8)) + 1 for t in texts)
