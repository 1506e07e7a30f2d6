"""One file-system layer for everything hnet reads and writes: local paths, `gs://` and `s3://`.

Work dirs (config, metrics, checkpoints, eval outputs), own-text data and TFDS `data_dir` go through
here. Local paths keep their os semantics (`~` expanded, made absolute where the code did before);
bucket paths go through etils `epath`, whose fsspec back-end needs gcsfs (`pip install 'hnet[gcs]'`)
or s3fs (`pip install 'hnet[s3]'`). Those are imported only when such a path is first used; a missing
one is a one-line error naming the extra. (epath prefers `tf.io.gfile` when TensorFlow is installed.)
"""
import importlib.util
import os
import re
from typing import IO

from etils import epath

# scheme -> (the fsspec client it needs, the extra that installs it)
CLIENTS = {"gs": ("gcsfs", "gcs"), "s3": ("s3fs", "s3")}
_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


class MissingExtra(RuntimeError):
  """A bucket path whose client is not installed."""


def scheme(path: str | os.PathLike) -> str | None:
  """'gs' / 's3' for a bucket path, None for a local one; a ValueError for any other URL."""
  m = _URL.match(os.fspath(path))
  if m is None:
    return None
  if m.group(1) not in CLIENTS:
    raise ValueError(f"{os.fspath(path)!r}: unsupported storage {m.group(1)}:// (local paths, gs:// and s3:// are)")
  return m.group(1)


def is_remote(path: str | os.PathLike) -> bool:
  return scheme(path) is not None


def require_client(path: str | os.PathLike) -> None:
  """MissingExtra naming the extra when `path` is in a bucket whose client is not installed."""
  s = scheme(path)
  if s is not None and importlib.util.find_spec(CLIENTS[s][0]) is None:
    module, extra = CLIENTS[s]
    raise MissingExtra(f"{os.fspath(path)} needs {module}: pip install 'hnet[{extra}]'")


def resolve(path: str | os.PathLike) -> str:
  """The canonical string of `path`: local ones absolute with `~` expanded (os.path.abspath), bucket ones
  without a trailing '/' (their client checked)."""
  p = os.fspath(path)
  if is_remote(p):
    require_client(p)
    return p.rstrip("/")
  return os.path.abspath(os.path.expanduser(p))


def path(p: str | os.PathLike) -> epath.Path:
  """An epath.Path for `p` (local: as given, `~` expanded; bucket: client checked)."""
  p = os.fspath(p)
  if is_remote(p):
    require_client(p)
    return epath.Path(p)
  return epath.Path(os.path.expanduser(p))


def open_file(p: str | os.PathLike, mode: str = "r") -> IO:
  """Opens a local or bucket file (text modes read and write UTF-8)."""
  if is_remote(p):
    return path(p).open(mode)  # epath's fsspec files are text in text modes, UTF-8
  return open(os.path.expanduser(os.fspath(p)), mode, **({} if "b" in mode else {"encoding": "utf-8"}))


def write_text(p: str | os.PathLike, text: str) -> None:
  """Writes `text` to `p` whole: locally through a temporary file and a rename; an object in a bucket
  appears only once its upload completes, so a reader never sees half of it either way."""
  p = os.fspath(p)
  if is_remote(p):
    path(p).write_text(text)
    return
  tmp = f"{p}.tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp, p)


def makedirs(p: str | os.PathLike) -> None:
  """Creates a local directory and its parents; nothing for a bucket (objects need no directories)."""
  if not is_remote(p):
    os.makedirs(os.path.expanduser(os.fspath(p)), exist_ok=True)


def _fs(p: str):
  """epath's own fsspec file system of a bucket path, for what epath does not offer (`**` globs, recursive
  listing and copies). The same instance: gcsfs caches listings per instance, and a second one would
  not see the other's changes."""
  from etils.epath import backend  # pylint: disable=import-outside-toplevel
  require_client(p)
  return backend.fsspec_backend.fs(p)


def move(src: str | os.PathLike, dst: str | os.PathLike) -> None:
  """Renames a file or directory. In a bucket (no rename there) each object is copied server-side, then the
  originals deleted: not atomic, and gcsfs's own rename first tries GCS's moveTo, which emulators lack."""
  src, dst = os.fspath(src), os.fspath(dst)
  if not is_remote(src):
    os.rename(src, dst)
    return
  fs = _fs(src)
  fs.copy(src.rstrip("/"), dst.rstrip("/"), recursive=True)
  fs.rm(src.rstrip("/"), recursive=True)
  fs.invalidate_cache()  # listings of both trees changed


def files_under(directory: str | os.PathLike) -> list[str]:
  """Every file below `directory` (recursively), as paths relative to it, sorted."""
  d = os.fspath(directory)
  if is_remote(d):
    root = d.rstrip("/").split("://", 1)[1] + "/"
    return sorted(f[len(root):] for f in _fs(d).find(root) if f.startswith(root) and not f.endswith("/"))
  out = []
  for base, _, names in os.walk(d):
    out += [os.path.relpath(os.path.join(base, n), d) for n in names]
  return sorted(out)


def glob_files(pattern: str) -> list[str]:
  """The files a glob matches (`**` recurses), sorted; bucket ones keep their scheme."""
  if is_remote(pattern):
    s = scheme(pattern)
    found = _fs(pattern).glob(pattern, detail=True)
    return sorted(f"{s}://{f}" for f, info in found.items() if info.get("type") == "file")
  import glob  # pylint: disable=import-outside-toplevel
  return sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
