"""A user's own text files as documents: path resolution, reading, fingerprint, holdout.

`data.text_paths` is a comma-separated list of files, globs (`**` recurses) or directories
(every file below it ending in .txt/.text/.md/.jsonl/.json, optionally .gz/.xz/.bz2), local or
in a bucket (gs://, s3://: hnet/storage.py).
Files named *.jsonl / *.json (optionally compressed) hold one JSON object per line, the
text in field `text_key`; anything else is plain text. A plain-text file is one document,
except that files over `txt_doc_bytes` are cut (at blank lines, else at line ends, else at
a character boundary) into documents of about that size, so a single large file still
yields a validation holdout. Concatenating a file's documents gives back its bytes.
"""
import bz2
import contextlib
import glob
import gzip
import hashlib
import json
import lzma
import os
from collections.abc import Iterator

from hnet import storage

COMPRESSED = {".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open}
TEXT_SUFFIXES = (".txt", ".text", ".md", ".jsonl", ".json")
BINARY_PROBE_BYTES = 1024  # a NUL byte this early means the file is not text
READ_BLOCK_BYTES = 1 << 20


def split_paths(text_paths) -> list[str]:
  """'a,b' or a list/tuple -> non-empty entries with ~ expanded."""
  entries = text_paths.split(",") if isinstance(text_paths, str) else list(text_paths)
  entries = [e.strip() for e in entries if e and e.strip()]
  return [e if storage.is_remote(e) else os.path.expanduser(e) for e in entries]


def _has_text_suffix(path: str) -> bool:
  stem, ext = os.path.splitext(path)
  if ext in COMPRESSED:
    ext = os.path.splitext(stem)[1]
  return ext.lower() in TEXT_SUFFIXES


def resolve(text_paths) -> list[str]:
  """Expands files, globs and directories into a sorted, de-duplicated list of files."""
  entries = split_paths(text_paths)
  if not entries:
    raise ValueError("data.dataset='text' needs data.text_paths (comma-separated files, globs or directories)")
  files = []
  for entry in entries:
    where = storage.path(entry)
    if glob.has_magic(entry):
      matches = storage.glob_files(entry)
      if not matches:
        raise FileNotFoundError(f"data.text_paths: no file matches {entry!r}")
      files += matches
    elif where.is_dir():
      found = [os.path.join(entry, f) for f in storage.files_under(entry) if _has_text_suffix(os.path.basename(f))]
      if not found:
        raise FileNotFoundError(f"data.text_paths: directory {entry!r} holds no file ending in "
                                f"{'/'.join(TEXT_SUFFIXES)} (optionally .gz/.xz/.bz2)")
      files += found
    elif where.is_file():
      files.append(entry)
    else:
      raise FileNotFoundError(f"data.text_paths: {entry!r} does not exist")
  return sorted(set(storage.resolve(f) for f in files))


def fingerprint(files: list[str], *extra) -> str:
  """Hash of paths, sizes and mtimes (and `extra` settings): changes when any input changes."""
  h = hashlib.sha256(repr(extra).encode())
  for f in files:
    if storage.is_remote(f):  # epath's stat: size and mtime in whole seconds
      st = storage.path(f).stat()
      h.update(f"{f}\0{st.length}\0{st.mtime}\n".encode())
      continue
    st = os.stat(f)
    h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
  return h.hexdigest()[:16]


def is_jsonl(path: str) -> bool:
  stem, ext = os.path.splitext(path)
  if ext in COMPRESSED:
    stem, ext = os.path.splitext(stem)
  return ext.lower() in (".jsonl", ".json")


@contextlib.contextmanager
def _open(path: str):
  """The file's bytes, decompressed by its suffix; local or in a bucket."""
  opener = COMPRESSED.get(os.path.splitext(path)[1])
  with storage.open_file(path, "rb") as raw:
    if opener is None:
      yield raw
    else:
      with opener(raw, "rb") as f:
        yield f


def _check_not_binary(path: str, head: bytes) -> None:
  if b"\0" in head[:BINARY_PROBE_BYTES]:
    raise ValueError(f"{path} looks binary (NUL byte in its first {BINARY_PROBE_BYTES} bytes); "
                     "data.text_paths takes text (.txt) or JSON-lines (.jsonl) files")


def _cut(buf: bytes, start: int, target: int) -> int:
  """End (absolute) of a document of about `target` bytes starting at `start` in `buf`."""
  for sep in (b"\n\n", b"\n"):
    at = buf.find(sep, start + target, start + 2 * target)
    if at >= 0:
      return at + len(sep)
    at = buf.rfind(sep, start + target // 2, start + target)
    if at >= 0:
      return at + len(sep)
  # No line end near: cut at a character boundary (never inside a multi-byte character).
  at = start + target
  while at > start and (buf[at] & 0xC0) == 0x80:
    at -= 1
  if at == start:
    at = start + target
    while at < len(buf) and (buf[at] & 0xC0) == 0x80:
      at += 1
  return at


def read_txt(path: str, txt_doc_bytes: int = 0) -> Iterator[bytes]:
  """Documents of a plain-text file (bytes, as stored: invalid UTF-8 is kept)."""
  with _open(path) as f:
    buf = f.read(max(READ_BLOCK_BYTES, 2 * txt_doc_bytes))
    _check_not_binary(path, buf)
    while True:
      block = f.read(READ_BLOCK_BYTES)
      buf += block
      start = 0
      # Cut only with a full look-ahead window, except at the end of the file.
      while txt_doc_bytes > 0 and len(buf) - start >= (2 * txt_doc_bytes if block else txt_doc_bytes + 1):
        end = _cut(buf, start, txt_doc_bytes)
        yield buf[start:end]
        start = end
      buf = buf[start:]
      if not block:
        break
    if buf:
      yield buf


def read_jsonl(path: str, text_key: str) -> Iterator[bytes]:
  """Documents of a JSON-lines file: field `text_key` of each non-blank line."""
  with _open(path) as f:
    head = f.peek(BINARY_PROBE_BYTES) if hasattr(f, "peek") else b""
    _check_not_binary(path, head)
    for lineno, line in enumerate(f, 1):
      if lineno == 1:
        _check_not_binary(path, line)
      if not line.strip():
        continue
      try:
        # surrogateescape keeps invalid UTF-8 bytes; bytes.to_bytes turns them back.
        obj = json.loads(line.decode("utf-8", "surrogateescape"))
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
      if not isinstance(obj, dict) or text_key not in obj:
        keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{path}:{lineno}: no field data.text_key={text_key!r} (found {keys})")
      text = obj[text_key]
      if not isinstance(text, str):
        raise ValueError(f"{path}:{lineno}: field {text_key!r} is {type(text).__name__}, not a string")
      yield text.encode("utf-8", "surrogateescape")


def read_documents(path: str, *, text_key: str = "text", txt_doc_bytes: int = 0) -> Iterator[bytes]:
  if is_jsonl(path):
    return read_jsonl(path, text_key)
  return read_txt(path, txt_doc_bytes)


def doc_hash(doc: bytes) -> int:
  """Stable 64-bit hash of a document's bytes (identical documents share a split)."""
  return int.from_bytes(hashlib.blake2b(doc, digest_size=8).digest(), "little")


def holdout(hashes: list[int], fraction: float) -> set[int]:
  """Indices of the validation documents: hash below `fraction` of the range.

  With two or more documents neither split is left empty: the document closest to the
  threshold moves over. One document always goes to train.
  """
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f"data.validation_fraction={fraction} must be in [0, 1)")
  threshold = fraction * 2**64
  chosen = {i for i, h in enumerate(hashes) if h < threshold}
  if fraction > 0 and len(hashes) >= 2:
    if not chosen:
      chosen = {min(range(len(hashes)), key=hashes.__getitem__)}
    elif len(chosen) == len(hashes):
      chosen.discard(max(range(len(hashes)), key=hashes.__getitem__))
  elif len(hashes) < 2:
    chosen = set()
  return chosen


def carve(doc: bytes, fraction: float) -> tuple[bytes, bytes] | None:
  """A lone document cut in two, (train, validation): about the last `fraction` of its bytes held out.

  The cut goes to the line end nearest that point (between 2·fraction and fraction/2 from the
  end), else to a character boundary. None when there is nothing to hold out (fraction 0, < 2 bytes).
  """
  n = len(doc)
  if fraction <= 0 or n < 2:
    return None
  target = min(max(int(n * (1 - fraction)), 1), n - 1)
  lo, hi = max(1, int(n * (1 - 2 * fraction))), min(n - 1, int(n * (1 - fraction / 2)))
  line_ends = [at + 1 for at in (doc.rfind(b"\n", lo, target), doc.find(b"\n", target, hi)) if 0 <= at < n - 1]
  if line_ends:
    end = min(line_ends, key=lambda at: abs(at - target))
  else:  # never inside a multi-byte character
    end = target
    while end > 1 and (doc[end] & 0xC0) == 0x80:
      end -= 1
  return doc[:end], doc[end:]
