"""SHA-256 of every file of a checkpoint step: written once the step is committed, checked before it is restored.

Orbax and TensorStore check the structure of what they read, not its bytes: random bytes in an array's
data file restore silently. `<step>/SHA256SUMS` lists each file of the step (relative path) in
`sha256sum` format, so `cd checkpoints/<step> && sha256sum -c SHA256SUMS` checks it by hand too.
A step without the file (older checkpoints, or a process killed between commit and sealing) is
restored unchecked. Steps in a bucket (gs://, s3://) are read and written through hnet/storage.py.
"""
import hashlib
import os

from hnet import storage

MANIFEST = "SHA256SUMS"
_BLOCK = 1 << 20


class CorruptCheckpoint(ValueError):
  """A file of a checkpoint step differs from its recorded checksum, or is missing."""


def _files(step_dir: str) -> list[str]:
  return [p for p in storage.files_under(step_dir) if p != MANIFEST and not p.startswith(MANIFEST + ".")]


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with storage.open_file(path, "rb") as f:
    while block := f.read(_BLOCK):
      h.update(block)
  return h.hexdigest()


def is_sealed(step_dir: str) -> bool:
  return storage.path(os.path.join(step_dir, MANIFEST)).exists()


def seal(step_dir: str) -> None:
  """Writes `<step_dir>/SHA256SUMS` (atomically: a process killed meanwhile leaves no partial manifest)."""
  lines = "".join(f"{_sha256(os.path.join(step_dir, p))}  {p}\n" for p in _files(step_dir))
  storage.write_text(os.path.join(step_dir, MANIFEST), lines)


def verify(step_dir: str) -> bool:
  """True when every file listed in the step's manifest has its checksum, False when the step has no manifest;
  CorruptCheckpoint naming the first file that is missing or differs."""
  manifest = os.path.join(step_dir, MANIFEST)
  try:
    with storage.open_file(manifest, "r") as f:
      entries = [line.rstrip("\n").split("  ", 1) for line in f if line.strip()]
  except FileNotFoundError:
    return False
  for digest, rel in entries:
    path = os.path.join(step_dir, rel)
    if not storage.path(path).is_file():
      raise CorruptCheckpoint(f"{rel} is missing")
    if _sha256(path) != digest:
      raise CorruptCheckpoint(f"{rel} does not match its checksum in {MANIFEST}")
  return True
