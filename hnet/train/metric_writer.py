"""The training run's metric writer (TensorBoard + metrics.jsonl), local or in a bucket.

TensorBoard events go through tensorboardX, which writes gs:// itself (google-cloud-storage, part of the
gcs extra) and s3:// (boto3). Objects in a bucket cannot be appended to: there metrics.jsonl is kept in
memory (what the run wrote before included) and uploaded whole after each write; a run logs a line per
`train.log_every` steps, so the object stays small.
"""
import json
import os

from hnet import storage


class _BucketLines:
  """metrics.jsonl in a bucket: earlier lines read once, the whole object rewritten at each flush."""

  def __init__(self, path: str):
    self._path = storage.path(path)
    self._text = self._path.read_text() if self._path.exists() else ""

  def write(self, line: str) -> None:
    self._text += line

  def flush(self) -> None:
    self._path.write_text(self._text)

  def close(self) -> None:
    self.flush()


class MetricWriter:
  """Scalars to TensorBoard and one JSON object per line in metrics.jsonl (process 0 only)."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self._tb = None
    self._jsonl = None
    if enabled:
      storage.makedirs(workdir)
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
      jsonl = os.path.join(workdir, "metrics.jsonl")
      self._jsonl = _BucketLines(jsonl) if storage.is_remote(workdir) else open(jsonl, "a", encoding="utf-8")

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
