"""Boundary visualisation: span composition, HTML, terminal, PNG, multi-byte text."""
import html
import pathlib
import re

import numpy as np
import pytest

from hnet.evals import boundary_rendering as vis

TEXT = "The cat <script>alert(1)</script> sat.\nçava 日本語 🙂".encode()


def _bounds(text_bytes, every0=3, every1=2, seed=0):
  rng = np.random.default_rng(seed)
  b0 = rng.random(len(text_bytes)) < 1 / every0
  b0[0] = True
  b1 = rng.random(int(b0.sum())) < 1 / every1
  b1[0] = True
  return [b0, b1]


def test_spans_cover_and_nest():
  bounds = _bounds(TEXT)
  s0, s1 = vis.chunk_spans(bounds)
  for spans in (s0, s1):
    assert spans[0][0] == 0 and spans[-1][1] == len(TEXT)
    assert all(a < b for a, b in spans)
    assert all(spans[k][1] == spans[k + 1][0] for k in range(len(spans) - 1))
  starts0 = {a for a, _ in s0}
  ends0 = {b for _, b in s0}
  assert len(s0) == bounds[0].sum() and len(s1) == bounds[1].sum()
  assert all(a in starts0 and b in ends0 for a, b in s1)  # each stage-1 span is a union of stage-0 spans


def test_spans_exact_and_forced_first():
  b0 = np.array([0, 0, 1, 0, 1, 1], bool)  # element 0 starts a chunk even if unset
  assert vis.chunk_spans([b0, np.array([1, 0, 1, 0], bool)]) == [[(0, 2), (2, 4), (4, 5), (5, 6)],
                                                                 [(0, 4), (4, 6)]]
  assert vis.chunk_spans([np.zeros(0, bool)]) == [[]]


def test_spans_shape_error():
  with pytest.raises(ValueError, match=r"boundaries\[1\] has 5 entries, expected 2"):
    vis.chunk_spans([np.array([1, 0, 1], bool), np.ones(5, bool)])


def _span_texts(page):
  return re.findall(r'<span class="[^"]*" title="[^"]*">(.*?)</span>', page)


def test_html_chunks_and_escaping():
  bounds = _bounds(TEXT)
  probs = [b * 0.8 + 0.1 for b in bounds]
  page = vis.to_html(TEXT, bounds, probs, title="t <b>")
  assert "<script>" not in page and "&lt;b&gt;" in page
  one_chunk = vis.to_html(TEXT, [np.eye(1, len(TEXT), dtype=bool)[0]])
  assert "&lt;script&gt;alert(1)&lt;/script&gt;" in one_chunk and "<script>" not in one_chunk
  shown = html.escape(TEXT.decode()).replace("\n", "\u23ce<br>")
  starts = [0] + list(np.cumsum([int(b.sum()) for b in bounds]))
  texts = _span_texts(page)
  for s, spans in enumerate(vis.chunk_spans(bounds)):
    assert "".join(texts[starts[s]:starts[s + 1]]) == shown  # every chunk, in order, whole text
    for k, (a, b) in enumerate(spans):
      assert f"chunk {k}: bytes [{a}, {b}), p=0.900" in page
  assert len(texts) == sum(len(s) for s in vis.chunk_spans(bounds))


def test_multibyte_chunks_inside_characters():
  text = "çava 日本語".encode()
  bounds = [np.ones(len(text), bool)]  # a chunk at every byte, many inside characters
  page = vis.to_html(text, bounds)
  assert page.count('class="mid"') == len(text) - len("çava 日本語")
  assert "".join(_span_texts(page)) == "çava 日本語"
  term = vis.to_terminal(text, bounds)
  assert "çava 日本語" in term and "+" not in term.splitlines()[-2]  # marks stay '|' at lead bytes
  assert vis.chunk_spans(bounds)[0] == [(i, i + 1) for i in range(len(text))]


def test_terminal_contains_text_and_wraps():
  long_text = ("lorem ipsum dolor sit amet " * 20).encode()
  bounds = _bounds(long_text)
  out = vis.to_terminal(long_text, bounds)
  rows = [r for r in out.splitlines() if r.startswith("   ")]
  assert "".join(r[3:] for r in rows) == long_text.decode()
  assert max(len(r) for r in out.splitlines()) <= 100
  mark_rows = [r for r in out.splitlines() if r.startswith("s0 ")]
  assert sum(r.count("|") for r in mark_rows) == bounds[0].sum()
  color = vis.to_terminal(long_text, bounds, color=True)
  assert "\x1b[" in color


def test_terminal_multibyte():
  out = vis.to_terminal(TEXT, _bounds(TEXT))
  for c in TEXT.decode().replace("\n", ""):
    assert c in out


def test_png_and_report(tmp_path):
  bounds = _bounds(TEXT)
  probs = [np.clip(b * 0.7 + np.linspace(0, 0.2, len(b)), 0, 1) for b in bounds]
  paths = vis.write_report(str(tmp_path), TEXT, bounds, probs)
  assert set(paths) == {"html", "txt", "png"}
  png = pathlib.Path(paths["png"]).read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
  assert "<html>" in pathlib.Path(paths["html"]).read_text(encoding="utf-8")
  assert "stage 1" in pathlib.Path(paths["txt"]).read_text(encoding="utf-8")
  # Without boundaries the x axis is the element index.
  assert vis.plot_probabilities(TEXT, probs, str(tmp_path / "p.png")).endswith("p.png")
