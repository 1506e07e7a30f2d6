"""Held-out documents for evaluation: a split of the configured dataset, or a local text file."""
import os

from hnet import storage
from hnet.data import bytes as doc_bytes, sources


def from_file(path: str, data_cfg) -> list[bytes]:
  """Documents of a .txt / .jsonl file, read as the data layer reads data.text_paths."""
  if not storage.path(path).is_file():
    raise FileNotFoundError(f"text file {path!r} does not exist")
  local_or_bucket = path if storage.is_remote(path) else os.path.expanduser(path)
  docs = list(sources.read_documents(local_or_bucket, text_key=data_cfg.text_key, txt_doc_bytes=data_cfg.txt_doc_bytes))
  if not docs:
    raise ValueError(f"text file {path!r} holds no documents")
  return docs


def from_split(data_cfg, split: str, limit: int = -1) -> list[bytes]:
  """The first `limit` (-1: all) documents of `split` of data.dataset, preparing it if needed."""
  from hnet.data import builders, pipeline  # pylint: disable=import-outside-toplevel  (tfds is heavy)
  pipeline.prepare(data_cfg, need=(split,))
  builder = builders.get_builder(data_cfg)
  key = "text" if data_cfg.dataset in ("builtin", "text") else data_cfg.text_key
  source = builder.as_data_source(split=split)
  n = len(source) if limit < 0 else min(limit, len(source))
  return [doc_bytes.to_bytes(source[i][key], data_cfg.invalid_utf8) for i in range(n)]


def load(data_cfg, *, text_file: str | None = None, split: str | None = None, limit: int = -1) -> list[bytes]:
  if text_file:
    docs = from_file(text_file, data_cfg)
    return docs if limit < 0 else docs[:limit]
  return from_split(data_cfg, split or data_cfg.eval_split, limit)


def as_text(docs: list[bytes]) -> list[str]:
  """Documents as str for the perturbation / multiple-choice helpers (invalid UTF-8 replaced)."""
  return [d.decode("utf-8", "replace") for d in docs]
