"""The training run's metric writer (TensorBoard + metrics.jsonl), local or in a bucket.

Objects in a bucket cannot be appended to: there metrics.jsonl and the TensorBoard event file are kept
in memory (metrics.jsonl with what the run wrote before) and uploaded whole at each flush (metrics.jsonl:
every logged step; events: tensorboardX's flushes and close). A run logs a line per `train.log_every`
steps, so both stay small. The event files go through hnet/storage.py like everything else: tensorboardX's
own gs:// writer retries an upload for two minutes at interpreter exit, and its s3:// one needs boto3.
"""
import json
import os

from hnet import storage


class _BucketFile:
  """A file in a bucket, written whole: what was written so far is uploaded at each flush (if it changed)."""

  def __init__(self, path: str, keep: bool = False):
    """`keep`: start from the object's current content (a resumed run's metrics.jsonl)."""
    self._path = storage.path(path)
    self._data = self._path.read_bytes() if keep and self._path.exists() else b""
    self._dirty = False

  def write(self, data: bytes | str) -> None:
    self._data += data.encode("utf-8") if isinstance(data, str) else data
    self._dirty = True

  def flush(self) -> None:
    if self._dirty:
      self._path.write_bytes(self._data)
      self._dirty = False

  def close(self) -> None:
    self.flush()


class _BucketEventFiles:
  """tensorboardX's writer factory for a bucket scheme (record_writer.register_writer_factory)."""

  def open(self, path: str) -> _BucketFile:
    return _BucketFile(path)

  def directory_check(self, path: str) -> None:
    del path  # objects need no directories


class MetricWriter:
  """Scalars to TensorBoard and one JSON object per line in metrics.jsonl (process 0 only)."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self._tb = None
    self._jsonl = None
    if enabled:
      storage.makedirs(workdir)
      from tensorboardX import SummaryWriter, record_writer  # pylint: disable=import-outside-toplevel
      if (scheme := storage.scheme(workdir)) is not None:
        record_writer.register_writer_factory(scheme, _BucketEventFiles())
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
      jsonl = os.path.join(workdir, "metrics.jsonl")
      self._jsonl = _BucketFile(jsonl, keep=True) if scheme else open(jsonl, "a", encoding="utf-8")

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in scalars.items()}
    for k, v in clean.items():
      self._tb.add_scalar(k, v, step)
    self._jsonl.write(json.dumps({"step": step, **clean}) + "\n")
    self._jsonl.flush()

  def write_text(self, tag: str, text: str) -> None:
    if self.enabled:
      self._tb.add_text(tag, text, 0)

  def close(self) -> None:
    if self.enabled:
      self._tb.close()
      self._jsonl.close()
