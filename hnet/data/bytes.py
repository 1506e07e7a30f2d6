"""Documents as byte tokens: BOS + UTF-8 bytes + EOS, split into overlapping pieces.

A document of n tokens has n - 1 targets (every token after BOS). With rows of L inputs,
piece k = tokens[k*L : k*L + L + 1]: consecutive pieces share one token, so every target
is predicted exactly once and nothing is dropped. Pure numpy: no grain, no tfds.
"""
import numpy as np

from hnet import BOS_ID, EOS_ID

INVALID_UTF8_POLICIES = ("keep", "replace")


def check_policy(invalid_utf8: str) -> None:
  if invalid_utf8 not in INVALID_UTF8_POLICIES:
    raise ValueError(f"data.invalid_utf8={invalid_utf8!r} is not one of {INVALID_UTF8_POLICIES}")


def to_bytes(text, invalid_utf8: str = "keep") -> bytes:
  """The UTF-8 bytes of `text` (bytes, str or a 0-d numpy array of either).

  'keep' leaves invalid UTF-8 as it is: every byte is a valid token. 'replace' turns each
  invalid sequence into U+FFFD (EF BF BD), as `bytes.decode(errors='replace')` does.
  """
  if isinstance(text, np.ndarray):
    text = text.item()
  if isinstance(text, str):
    # surrogateescape gives back the bytes a reader decoded with it (see sources.py).
    data = text.encode("utf-8", "surrogateescape")
  else:
    data = bytes(text)
  if invalid_utf8 == "replace":
    try:
      data.decode("utf-8")
    except UnicodeDecodeError:
      data = data.decode("utf-8", "replace").encode("utf-8")
  return data


def encode(text, invalid_utf8: str = "keep") -> np.ndarray:
  """BOS + bytes + EOS as uint8 tokens (BOS/EOS are never valid in UTF-8)."""
  data = to_bytes(text, invalid_utf8)
  tokens = np.empty(len(data) + 2, np.uint8)
  tokens[0] = BOS_ID
  tokens[1:-1] = np.frombuffer(data, np.uint8)
  tokens[-1] = EOS_ID
  return tokens


def num_pieces(num_tokens: int, seq_len: int) -> int:
  """Pieces of <= seq_len + 1 tokens a document of `num_tokens` (>= 2) is split into."""
  return -(-(num_tokens - 1) // seq_len)


def split(tokens: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
  """Splits a document into (full_KR, last): K full pieces of R = L + 1 tokens and the last one.

  The last piece has 2..L+1 tokens; it is the one that needs packing. Full pieces are rows
  on their own. Rows of full_KR are views into `tokens` (no copy).
  """
  tokens = np.ascontiguousarray(tokens)
  n, L = len(tokens), seq_len
  k = num_pieces(n, L) - 1
  if k == 0:
    return np.empty((0, L + 1), tokens.dtype), tokens
  # Overlapping rows over the same buffer (np.ndarray: ~10x cheaper per call than as_strided).
  step = tokens.strides[0]
  full_KR = np.ndarray((k, L + 1), tokens.dtype, buffer=tokens, strides=(L * step, step))
  return full_KR, tokens[k * L:]


def pieces(tokens: np.ndarray, seq_len: int) -> list[np.ndarray]:
  """All pieces of a document, in order (piece k = tokens[k*L : k*L + L + 1])."""
  return [tokens[s:s + seq_len + 1] for s in range(0, len(tokens) - 1, seq_len)]
