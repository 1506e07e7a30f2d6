"""Show where a hierarchical byte model puts its chunk boundaries: HTML, terminal text, PNG.

`boundaries[s]` is a bool array for stage s: stage 0 has one entry per byte, stage s > 0 one
entry per stage-(s-1) chunk; True marks the element that starts a chunk. Element 0 always
starts a chunk (H-Net forces a boundary there), whatever the array says. `probs[s]` holds
the boundary probabilities with the same shapes.

Chunks may start inside a multi-byte UTF-8 character. For display, a character belongs to
the chunk holding its first byte; a chunk made only of continuation bytes shows as an empty
marker (a dashed bar in HTML, '+' in the terminal). Invalid bytes show as U+FFFD, BOS (254)
and EOS (255) as the control pictures U+2402 and U+2403.
"""
import html
import os
import unicodedata
import warnings
from typing import Sequence

import numpy as np

from hnet import storage

BOS, EOS = 254, 255
Span = tuple[int, int]


def _as_masks(arrays: Sequence[np.ndarray], what: str) -> list[np.ndarray]:
  out = [np.asarray(a) for a in arrays]
  for s, a in enumerate(out):
    if a.ndim != 1:
      raise ValueError(f"{what}[{s}] must be 1-D, got shape {a.shape}")
  return out


def _starts(b: np.ndarray) -> list[int]:
  """Indices of the elements that start a chunk; element 0 always does."""
  return [0] + [int(i) for i in np.flatnonzero(b.astype(bool)) if i > 0] if len(b) else []


def chunk_spans(boundaries: Sequence[np.ndarray]) -> list[list[Span]]:
  """Per stage, the byte ranges [start, end) of its chunks, composed through lower stages."""
  spans, units = [], None  # units: byte spans of the elements of the current stage
  for s, b in enumerate(_as_masks(boundaries, "boundaries")):
    if units is None:
      units = [(i, i + 1) for i in range(len(b))]
    if len(b) != len(units):
      raise ValueError(f"boundaries[{s}] has {len(b)} entries, expected {len(units)} "
                       f"(one per {'byte' if s == 0 else f'stage-{s - 1} chunk'})")
    starts = _starts(b)
    ends = starts[1:] + [len(b)]
    units = [(units[i][0], units[j - 1][1]) for i, j in zip(starts, ends)]
    spans.append(units)
  return spans


def _characters(text_bytes: bytes) -> list[tuple[int, int, str]]:
  """(start, end, display string) per character; a bad byte is a character of its own."""
  out, i, n = [], 0, len(text_bytes)
  while i < n:
    lead = text_bytes[i]
    size = 1 if lead < 0x80 else 2 if 0xC2 <= lead <= 0xDF else 3 if 0xE0 <= lead <= 0xEF else (
        4 if 0xF0 <= lead <= 0xF4 else 1)
    if i + size > n or any(not 0x80 <= x <= 0xBF for x in text_bytes[i + 1:i + size]):
      size = 1
    raw = text_bytes[i:i + size]
    shown = {BOS: "\u2402", EOS: "\u2403"}.get(lead) if size == 1 else None
    out.append((i, i + size, shown or raw.decode("utf-8", errors="replace")))
    i += size
  return out


def _chunk_chars(chars: list[tuple[int, int, str]], spans: list[Span]) -> list[list[int]]:
  """For each chunk, the indices of the characters whose first byte lies in it."""
  out, c = [], 0
  for _, end in spans:
    mine = []
    while c < len(chars) and chars[c][0] < end:
      mine.append(c)
      c += 1
    out.append(mine)
  return out


_CSS = """body{font-family:sans-serif;margin:2em}
.text{font-family:monospace;white-space:pre-wrap;line-height:1.9;font-size:15px}
.c0{background:#cfe8ff}.c1{background:#ffe2b8}
.c0,.c1{border-right:1px solid #888;padding:1px 0}
.mid{border-left:2px dashed #d00}
h2{font-size:1.05em;margin-top:1.5em}"""


def to_html(text_bytes: bytes, boundaries: Sequence[np.ndarray],
            probs: Sequence[np.ndarray] | None = None, title: str = "") -> str:
  """A standalone HTML page: per stage, each chunk as a coloured span with a tooltip."""
  spans = chunk_spans(boundaries)
  starts = [_starts(b) for b in _as_masks(boundaries, "boundaries")]
  probs = None if probs is None else _as_masks(probs, "probs")
  if probs is not None and [len(p) for p in probs] != [len(b) for b in boundaries]:
    raise ValueError("probs must have the same shapes as boundaries")
  chars = _characters(text_bytes)
  body = [f"<h1>{html.escape(title)}</h1>" if title else ""]
  for s, stage_spans in enumerate(spans):
    mean = len(text_bytes) / max(1, len(stage_spans))
    body.append(f"<h2>Stage {s}: {len(stage_spans)} chunks, {mean:.2f} bytes/chunk</h2>")
    parts, shown = [], 0
    for k, ((a, b), idx) in enumerate(zip(stage_spans, _chunk_chars(chars, stage_spans))):
      tip = f"chunk {k}: bytes [{a}, {b})"
      if probs is not None:
        tip += f", p={float(probs[s][starts[s][k]]):.3f}"
      text = html.escape("".join(chars[i][2] for i in idx)).replace("\n", "\u23ce<br>")
      # Colours alternate over visible chunks, so an empty one never leaves two neighbours alike.
      cls = f"c{shown % 2}" if idx else "mid"
      shown += bool(idx)
      if not idx:
        tip += " (inside a multi-byte character)"
      parts.append(f'<span class="{cls}" title="{html.escape(tip)}">{text}</span>')
    body.append(f'<div class="text">{"".join(parts)}</div>')
  return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title or 'boundaries')}"
          f"</title><style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _cell(s: str) -> tuple[str, int]:
  """Terminal rendering of one character and its column width."""
  if s == "\n":
    return "\u23ce", 1
  if s == "\t":
    return "\u2192", 1
  if len(s) == 1 and unicodedata.category(s) in ("Cc", "Cf"):
    return "\u00b7", 1
  wide = any(unicodedata.east_asian_width(ch) in "WF" for ch in s)
  return s, 2 if wide else 1


_ANSI = ("\x1b[30;46m", "\x1b[30;43m")
_RESET = "\x1b[0m"


def to_terminal(text_bytes: bytes, boundaries: Sequence[np.ndarray], *, color: bool = False,
                width: int = 100) -> str:
  """Plain text: a text row, then one marker row per stage ('|' chunk start, '+' mid-character).

  With color=True each stage is instead a copy of the text with alternating ANSI backgrounds.
  Rows are wrapped at `width` columns (east-Asian wide characters count as two).
  """
  spans = chunk_spans(boundaries)
  chars = _characters(text_bytes)
  cells = [_cell(c[2]) for c in chars]
  label_w = len(f"s{len(spans) - 1} ") if spans else 3
  # Per stage and character: marker ('|' chunk starts at its first byte, '+' inside it) and chunk id.
  byte_to_char = {x: ci for ci, (a, b, _) in enumerate(chars) for x in range(a, b)}
  marks, shade = [], []  # shade: parity of the visible chunk holding each character
  for stage_spans in spans:
    m, owner = [" "] * len(chars), [0] * len(chars)
    for k, idx in enumerate(i for i in _chunk_chars(chars, stage_spans) if i):
      for i in idx:
        owner[i] = k % 2
    for a, _ in stage_spans:
      ci = byte_to_char[a]
      m[ci] = "|" if chars[ci][0] == a else (m[ci] if m[ci] == "|" else "+")
    marks.append(m)
    shade.append(owner)
  lines, i = [], 0
  while i < len(cells):
    j, used = i, 0
    while j < len(cells) and (j == i or used + cells[j][1] <= width - label_w):
      used += cells[j][1]
      j += 1
    if color:
      for s in range(len(spans)):
        row = "".join((_ANSI[shade[s][c]] if c == i or shade[s][c] != shade[s][c - 1] else "")
                      + cells[c][0] for c in range(i, j)) + _RESET
        lines.append(f"s{s}".ljust(label_w) + row)
    else:
      lines.append(" " * label_w + "".join(cells[c][0] for c in range(i, j)))
      for s in range(len(spans)):
        lines.append(f"s{s}".ljust(label_w) + "".join(marks[s][c].ljust(cells[c][1]) for c in range(i, j)))
    lines.append("")
    i = j
  summary = [f"stage {s}: {len(sp)} chunks, {len(text_bytes) / max(1, len(sp)):.2f} bytes/chunk"
             for s, sp in enumerate(spans)]
  return "\n".join(summary + [""] + lines)


def plot_probabilities(text_bytes: bytes, probs: Sequence[np.ndarray], path: str, *,
                       boundaries: Sequence[np.ndarray] | None = None) -> str:
  """PNG of boundary probability per stage, one subplot each, with the 0.5 threshold.

  x is the byte position: stage s > 0 entries are placed at the first byte of their
  stage-(s-1) chunk, which needs `boundaries`; without them x is the element index.
  Chosen boundaries (if given) are marked with dots.
  """
  # Lazy and pyplot-free: an Agg canvas on a bare Figure leaves the global backend alone.
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

  probs = _as_masks(probs, "probs")
  spans = chunk_spans(boundaries) if boundaries is not None else None
  masks = _as_masks(boundaries, "boundaries") if boundaries is not None else None
  n = max(1, len(probs))
  fig = Figure(figsize=(min(24, 6 + len(text_bytes) / 20), 1.0 + 1.8 * n))
  FigureCanvasAgg(fig)
  axes = fig.subplots(n, 1, sharex=spans is not None, squeeze=False)
  for s, p in enumerate(probs):
    ax = axes[s, 0]
    if spans is not None and s > 0:
      x = np.array([a for a, _ in spans[s - 1]] + [len(text_bytes)], dtype=float)
    else:
      x = np.arange(len(p) + 1, dtype=float)
    if len(x) != len(p) + 1:
      raise ValueError(f"probs[{s}] has {len(p)} entries, expected {len(x) - 1}")
    # Each entry holds over its element's bytes, so repeat the last value to the element's end.
    if len(p):
      ax.step(x, np.append(p, p[-1:]), where="post", lw=1.2, color="C0")
    x = x[:-1]
    if masks is not None:
      hit = masks[s].astype(bool)
      ax.plot(x[hit], p[hit], "o", ms=3, color="C3", label="boundary")
    ax.axhline(0.5, ls="--", lw=0.8, color="gray")
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel(f"stage {s}")
  if len(text_bytes) <= 120 and probs:
    chars = _characters(text_bytes)
    axes[0, 0].set_xticks([(c[0] + c[1]) / 2 for c in chars], [_cell(c[2])[0] for c in chars], fontsize=7)
  axes[-1, 0].set_xlabel("byte position" if spans is not None or n == 1 else "element index")
  fig.suptitle("boundary probability")
  with warnings.catch_warnings():  # CJK or emoji tick labels lack glyphs in the default font
    warnings.filterwarnings("ignore", message="Glyph .* missing", category=UserWarning)
    fig.tight_layout()
    with storage.open_file(path, "wb") as f:  # local or in a bucket
      fig.savefig(f, format="png", dpi=100)
  return path


def write_report(out_dir: str, text_bytes: bytes, boundaries: Sequence[np.ndarray],
                 probs: Sequence[np.ndarray] | None = None, title: str = "") -> dict[str, str]:
  """Write boundaries.html, boundaries.txt and (if probs) boundary_probs.png; return their paths."""
  storage.makedirs(out_dir)
  paths = {"html": os.path.join(out_dir, "boundaries.html"), "txt": os.path.join(out_dir, "boundaries.txt")}
  with storage.open_file(paths["html"], "w") as f:
    f.write(to_html(text_bytes, boundaries, probs, title=title))
  with storage.open_file(paths["txt"], "w") as f:
    f.write(to_terminal(text_bytes, boundaries))
  if probs is not None:
    paths["png"] = plot_probabilities(text_bytes, probs, os.path.join(out_dir, "boundary_probs.png"),
                                      boundaries=boundaries)
  return paths
