"""Reading a user's own text files: paths, formats, bad input, fingerprint, holdout."""
import bz2
import gzip
import lzma
import os

import pytest

from hnet.data import sources
from tests.helpers import write_jsonl


def test_resolve_files_globs_and_directories(tmp_path):
  (tmp_path / "d" / "sub").mkdir(parents=True)
  a = tmp_path / "a.txt"
  a.write_text("a")
  (tmp_path / "d" / "b.jsonl.gz").write_bytes(gzip.compress(b'{"text": "b"}\n'))
  (tmp_path / "d" / "sub" / "c.md").write_text("c")
  (tmp_path / "d" / "skip.bin").write_bytes(b"\0")
  got = sources.resolve(f"{a}, {tmp_path}/d,{tmp_path}/*.txt")
  assert got == sorted({str(a), str(tmp_path / "d" / "b.jsonl.gz"), str(tmp_path / "d" / "sub" / "c.md")})
  assert sources.resolve(str(tmp_path / "**" / "*.md")) == [str(tmp_path / "d" / "sub" / "c.md")]


@pytest.mark.parametrize("entry, match", [("missing.txt", "does not exist"), ("*.nothing", "no file matches"),
                                          ("emptydir", "holds no file")])
def test_resolve_errors_name_the_path(tmp_path, entry, match):
  (tmp_path / "emptydir").mkdir()
  with pytest.raises(FileNotFoundError, match=match) as e:
    sources.resolve(str(tmp_path / entry))
  assert entry.replace("*", "") in str(e.value)


def test_resolve_needs_paths():
  with pytest.raises(ValueError, match="data.text_paths"):
    sources.resolve(" , ")


@pytest.mark.parametrize("ext, compress", [("", lambda b: b), (".gz", gzip.compress), (".xz", lzma.compress),
                                           (".bz2", bz2.compress)])
def test_compressed_files(tmp_path, ext, compress):
  txt = tmp_path / f"a.txt{ext}"
  txt.write_bytes(compress("héllo\n".encode()))
  jsonl = tmp_path / f"a.jsonl{ext}"
  jsonl.write_bytes(compress(b'{"text": "one"}\n\n{"text": "two", "x": 1}\n'))
  assert list(sources.read_documents(str(txt))) == ["héllo\n".encode()]
  assert list(sources.read_documents(str(jsonl))) == [b"one", b"two"]


def test_txt_is_cut_into_documents_without_losing_bytes(tmp_path):
  text = "".join(f"paragraph {i} {'é' * (i % 50)}\n" + ("\n" if i % 3 == 0 else "") for i in range(3000)).encode()
  path = tmp_path / "big.txt"
  path.write_bytes(text)
  docs = list(sources.read_txt(str(path), txt_doc_bytes=4096))
  assert b"".join(docs) == text
  assert len(docs) > 10 and all(len(d) < 2 * 4096 for d in docs)
  assert all(d.endswith(b"\n\n") for d in docs[:-1])  # cut at blank lines
  for d in docs:
    d.decode("utf-8")  # never inside a multi-byte character
  assert list(sources.read_txt(str(path), txt_doc_bytes=0)) == [text]


def test_txt_keeps_invalid_utf8(tmp_path):
  path = tmp_path / "bad.txt"
  path.write_bytes(b"ok \xff\xfe end")
  assert list(sources.read_documents(str(path))) == [b"ok \xff\xfe end"]


def test_jsonl_keeps_invalid_utf8(tmp_path):
  path = tmp_path / "bad.jsonl"
  path.write_bytes(b'{"text": "ok \xff end"}\n')
  assert list(sources.read_documents(str(path))) == [b"ok \xff end"]


def test_binary_file_is_refused(tmp_path):
  path = tmp_path / "image.txt"
  path.write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")
  with pytest.raises(ValueError, match=f"{path} looks binary"):
    list(sources.read_documents(str(path)))


@pytest.mark.parametrize("content, match", [
    (b'{"body": "x"}\n', r"a.jsonl:1: no field data.text_key='text' \(found \['body'\]\)"),
    (b'{"text": "x"}\n{"text": 3}\n', r"a.jsonl:2: field 'text' is int"),
    (b'{"text": "x"}\nnot json\n', r"a.jsonl:2: not valid JSON"),
])
def test_jsonl_errors_name_file_and_line(tmp_path, content, match):
  path = tmp_path / "a.jsonl"
  path.write_bytes(content)
  with pytest.raises(ValueError, match=match):
    list(sources.read_documents(str(path)))


def test_custom_text_key(tmp_path):
  path = write_jsonl(tmp_path / "a.jsonl", ["x", "y"], key="content")
  assert list(sources.read_documents(path, text_key="content")) == [b"x", b"y"]


def test_fingerprint_follows_content_and_settings(tmp_path):
  path = tmp_path / "a.txt"
  path.write_text("one")
  fp = sources.fingerprint([str(path)], "text")
  assert sources.fingerprint([str(path)], "text") == fp
  assert sources.fingerprint([str(path)], "body") != fp
  path.write_text("one, two")
  os.utime(path, ns=(1, 1))
  assert sources.fingerprint([str(path)], "text") != fp


def test_holdout_is_deterministic_and_keeps_both_splits():
  hashes = [sources.doc_hash(str(i).encode()) for i in range(2000)]
  chosen = sources.holdout(hashes, 0.05)
  assert chosen == sources.holdout(hashes, 0.05)
  assert 60 < len(chosen) < 140
  assert sources.holdout(hashes[:2], 0.05) and len(sources.holdout(hashes[:2], 0.05)) == 1
  assert sources.holdout(hashes[:1], 0.05) == set()
  assert sources.holdout(hashes, 0.0) == set()
  with pytest.raises(ValueError, match="data.validation_fraction"):
    sources.holdout(hashes, 1.0)


def test_carve_holds_out_the_tail_of_a_lone_document_at_a_line_end():
  doc = b"".join(b"line %03d of the only document\n" % i for i in range(100))  # 3100 bytes
  train, validation = sources.carve(doc, 0.05)
  assert train + validation == doc
  assert train.endswith(b"\n") and validation.startswith(b"line 0")  # whole lines
  assert 0.025 * len(doc) <= len(validation) <= 0.1 * len(doc)
  assert sources.carve(doc, 0.0) is None and sources.carve(b"x", 0.05) is None


def test_carve_without_line_ends_keeps_characters_whole():
  doc = "é" * 100  # 200 bytes, no newline
  train, validation = sources.carve(doc.encode(), 0.05)
  assert (train + validation).decode() == doc and validation.decode() == "é" * len(validation.decode())
  assert sources.carve(b"ab", 0.05) == (b"a", b"b")
