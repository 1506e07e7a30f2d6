"""TFDS builders writing array_record files (no TensorFlow needed), and dataset lookup.

`hnet_builtin`: the embedded corpus (hnet/data/builtin, see SOURCES.md).
`hnet_text`: a user's own .txt / .jsonl files. Its config name is a fingerprint of the
resolved file list (paths, sizes, mtimes) and the settings that shape the documents, so
editing, adding or removing a file prepares a fresh copy instead of reusing stale data.
Validation is a hash-based holdout of whole documents (sources.holdout); a lone document (one
small file) is cut in two instead, its last `validation_fraction` held out (sources.carve).

Any other name is looked up in the TFDS catalogue and must already be prepared in
array_record format under the data dir (random access needs it).
"""
import dataclasses
import json
import logging
import lzma
import os
from importlib import resources

import tensorflow_datasets as tfds

from hnet import storage
from hnet.data import sources

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = "~/.cache/hnet/tfds"
BUILTIN_SPLITS = ("train", "validation")


def data_dir(data_cfg) -> str:
  """data.data_dir, else $HNET_DATA_DIR, else ~/.cache/hnet/tfds; a local directory.

  array_record files are written and read with local file I/O (a gs:// data dir fails inside TFDS's writer with
  "open() failed"), so a bucket is refused in one line; the text itself may be in one (data.text_paths)."""
  path = data_cfg.data_dir or os.environ.get("HNET_DATA_DIR") or DEFAULT_DATA_DIR
  if storage.is_remote(path):
    raise ValueError(f"data.data_dir={path!r}: prepared data (array_record) must be on a local or shared file "
                     "system, not in a bucket; data.text_paths may be in one (each host prepares its copy)")
  return storage.resolve(path)


class _CountingBuilder(tfds.core.GeneratorBasedBuilder):
  """Records documents and text bytes per split in the dataset info (metadata.json)."""

  # No download checksums to find; tfds 4.9 would otherwise probe this package through
  # `importlib_resources`, a module it does not declare as a dependency.
  code_path = None
  FEATURES = ("text", "source")  # all Text; Text stores bytes as given, so invalid UTF-8 survives

  def _info(self) -> tfds.core.DatasetInfo:
    features = tfds.features.FeaturesDict({k: tfds.features.Text() for k in self.FEATURES})
    return tfds.core.DatasetInfo(builder=self, description=self.__doc__, features=features,
                                 metadata=tfds.core.MetadataDict())

  def _count(self, split: str, doc: bytes) -> None:
    stats = self.info.metadata.setdefault("splits", {}).setdefault(split, {"documents": 0, "bytes": 0})
    stats["documents"] += 1
    stats["bytes"] += len(doc)


class HnetBuiltin(_CountingBuilder):
  """The embedded multilingual corpus (prose, technical docs, code); see SOURCES.md."""

  VERSION = tfds.core.Version("1.1.0")  # bump when the files under hnet/data/builtin or the features change
  RELEASE_NOTES = {"1.1.0": "adds the lang feature"}
  FEATURES = ("text", "source", "lang")  # lang: ISO 639-1 code or 'code' (SOURCES.md)

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split) for split in BUILTIN_SPLITS}

  def _generate_examples(self, split: str):
    path = resources.files("hnet.data") / "builtin" / f"{split}.jsonl.xz"
    with path.open("rb") as raw, lzma.open(raw, "rt", encoding="utf-8") as f:
      for i, line in enumerate(f):
        obj = json.loads(line)
        doc = obj["text"].encode("utf-8")
        self._count(split, doc)
        yield i, {"text": doc, "source": obj["source"], "lang": obj["lang"]}


@dataclasses.dataclass(eq=False)
class TextConfig(tfds.core.BuilderConfig):
  """Resolved input files and the settings that shape the documents."""
  files: tuple[str, ...] = ()
  text_key: str = "text"
  txt_doc_bytes: int = 0
  validation_fraction: float = 0.05


class HnetText(_CountingBuilder):
  """Documents from the user's own .txt / .jsonl files (data.text_paths)."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.1.0": "a lone document is cut in two: train and validation"}

  def _split_generators(self, dl_manager):
    del dl_manager
    cfg = self.builder_config
    # Pass 1 hashes every document, so the holdout can keep both splits non-empty.
    keys, hashes = [], []
    for file_index, path in enumerate(cfg.files):
      n = 0
      for n, doc in enumerate(self._read(path), 1):
        keys.append((file_index, n - 1))
        hashes.append(sources.doc_hash(doc))
      if n == 0:
        log.warning("data: %s holds no documents; skipped", path)
        self.info.metadata.setdefault("empty_files", []).append(path)
    if not keys:
      raise ValueError(f"data.text_paths: no documents in {len(cfg.files)} file(s) ({', '.join(cfg.files[:3])}"
                       f"{', ...' if len(cfg.files) > 3 else ''})")
    if len(keys) == 1 and (carved := self._carve_lone_document(cfg.files[keys[0][0]])):
      return carved
    held_out = {keys[i] for i in sources.holdout(hashes, cfg.validation_fraction)}
    splits = {"train": self._generate_examples(held_out, False)}
    if held_out:  # TFDS refuses empty splits: one document (or fraction 0) gives no validation split
      splits["validation"] = self._generate_examples(held_out, True)
    return splits

  def _read(self, path: str):
    cfg = self.builder_config
    return sources.read_documents(path, text_key=cfg.text_key, txt_doc_bytes=cfg.txt_doc_bytes)

  def _carve_lone_document(self, path: str) -> dict | None:
    """One document (one small file): its head trains, its tail validates (sources.carve)."""
    fraction = self.builder_config.validation_fraction
    parts = sources.carve(next(iter(self._read(path))), fraction)
    if parts is None:
      return None
    log.info("data: one document in data.text_paths: its last %d of %d bytes held out for validation "
             "(data.validation_fraction=%g)", len(parts[1]), sum(map(len, parts)), fraction)
    return {split: self._carved(split, part, path) for split, part in zip(("train", "validation"), parts)}

  def _carved(self, split: str, part: bytes, path: str):
    self._count(split, part)
    yield "0:0", {"text": part, "source": path}

  def _generate_examples(self, held_out: set, validation: bool):
    split = "validation" if validation else "train"
    for file_index, path in enumerate(self.builder_config.files):
      for doc_index, doc in enumerate(self._read(path)):
        if ((file_index, doc_index) in held_out) == validation:
          self._count(split, doc)
          yield f"{file_index}:{doc_index}", {"text": doc, "source": path}


class _QuietTextConfig(logging.Filter):
  """Drops tfds's 'Using custom data configuration' warning for TextConfig: custom by design."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (isinstance(record.args, tuple) and record.args and isinstance(record.args[0], TextConfig))


logging.getLogger("absl").addFilter(_QuietTextConfig())


def text_config(data_cfg) -> TextConfig:
  files = sources.resolve(data_cfg.text_paths)
  settings = (data_cfg.text_key, int(data_cfg.txt_doc_bytes), float(data_cfg.validation_fraction))
  sources.holdout([], settings[2])  # validates the fraction before any work
  return TextConfig(name=f"fp_{sources.fingerprint(files, *settings)}", files=tuple(files), text_key=settings[0],
                    txt_doc_bytes=settings[1], validation_fraction=settings[2],
                    description=f"{len(files)} file(s) from data.text_paths")


def get_builder(data_cfg) -> tfds.core.DatasetBuilder:
  """The builder for data.dataset: 'builtin', 'text' or a TFDS catalogue name."""
  name, directory = data_cfg.dataset, data_dir(data_cfg)
  if name == "builtin":
    return HnetBuiltin(data_dir=directory, file_format="array_record")
  if name == "text":
    return HnetText(config=text_config(data_cfg), data_dir=directory, file_format="array_record")
  try:
    return tfds.builder(name, data_dir=directory)
  except tfds.core.registered.DatasetNotFoundError:
    raise ValueError(f"unknown data.dataset={name!r}: use 'builtin', 'text' or a TFDS dataset name "
                     "(e.g. 'lm1b', 'pg19', 'c4/en')") from None
