"""Seeded text perturbations for robustness evaluation (noised HellaSwag, BLT paper).

Every function maps a `str` to a `str` at the level of characters (Unicode code points),
so a multi-byte UTF-8 character is never split. Rate-based perturbations touch exactly
`round(rate * len(text))` positions, drawn without replacement with `random.Random(seed)`:
every item of an evaluation then gets the same amount of noise, and the result is the same
on every machine (no hash-ordered containers are iterated).
"""
import random
import zlib
from typing import Callable

# Staggered QWERTY rows and their horizontal offsets (in key widths) for neighbour lookup.
_ROWS = (("1234567890", 0.0), ("qwertyuiop", 0.5), ("asdfghjkl", 0.75), ("zxcvbnm", 1.25))


def _qwerty_neighbours() -> dict[str, str]:
  """Lower-case key -> keys touching it; letters map to letters, digits to digits."""
  pos = {k: (r, off + i) for r, (keys, off) in enumerate(_ROWS) for i, k in enumerate(keys)}
  out = {}
  for k, (r, x) in pos.items():
    near = [j for j, (r2, x2) in pos.items()
            if j != k and abs(r2 - r) <= 1 and abs(x2 - x) <= (1.0 if r2 == r else 0.75)]
    out[k] = "".join(j for j in near if j.isdigit() == k.isdigit())
  return out


QWERTY_NEIGHBOURS = _qwerty_neighbours()


def _num_positions(n: int, rate: float) -> int:
  if not 0.0 <= rate <= 1.0:
    raise ValueError(f"rate must be in [0, 1], got {rate}")
  return min(n, int(rate * n + 0.5))


def _positions(n: int, rate: float, rng: random.Random) -> list[int]:
  """Sorted distinct positions, round(rate * n) of them."""
  return sorted(rng.sample(range(n), _num_positions(n, rate)))


def ant_speak(text: str) -> str:
  """Upper-case, characters separated by single spaces: 'ab' -> 'A B'."""
  return " ".join(text.upper())


def upper_case(text: str) -> str:
  """All upper-case."""
  return text.upper()


def no_space(text: str) -> str:
  """Remove all whitespace."""
  return "".join(c for c in text if not c.isspace())


def drop(text: str, rate: float = 0.1, seed: int = 0) -> str:
  """Delete round(rate * len) characters at random positions."""
  gone = set(_positions(len(text), rate, random.Random(seed)))
  return "".join(c for i, c in enumerate(text) if i not in gone)


def random_case(text: str, p: float = 0.5, seed: int = 0) -> str:
  """Upper-case each character with probability p, lower-case it otherwise."""
  if not 0.0 <= p <= 1.0:
    raise ValueError(f"p must be in [0, 1], got {p}")
  rng = random.Random(seed)
  return "".join(c.upper() if rng.random() < p else c.lower() for c in text)


def repeat(text: str, rate: float = 0.2, max_repeats: int = 4, seed: int = 0) -> str:
  """Repeat round(rate * len) characters, each 1..max_repeats extra times (uniform)."""
  if max_repeats < 1:
    raise ValueError(f"max_repeats must be >= 1, got {max_repeats}")
  rng = random.Random(seed)
  extra = {i: rng.randint(1, max_repeats) for i in _positions(len(text), rate, rng)}
  return "".join(c * (1 + extra.get(i, 0)) for i, c in enumerate(text))


def _substitute(c: str, pool: list[str], rng: random.Random) -> str:
  """A QWERTY neighbour (same case) for ASCII letters and digits, else another char of the text."""
  near = QWERTY_NEIGHBOURS.get(c.lower()) if c.isascii() else None
  if near:
    s = rng.choice(near)
    return s.upper() if c.isupper() else s
  # Non-ASCII and punctuation: no keyboard to consult, so draw from the text's own characters;
  # this keeps the script (Greek stays Greek, CJK stays CJK) and the byte widths realistic.
  others = [x for x in pool if x != c]
  return rng.choice(others) if others else c


def typo(text: str, rate: float = 0.05, seed: int = 0) -> str:
  """At round(rate * len) positions, swap with the next character or substitute (50/50).

  Substitution uses a neighbouring QWERTY key for ASCII letters (case kept) and digits;
  any other non-space character is replaced by a different character drawn from the
  text itself. Whitespace and the last character are never substituted: they are swapped
  with the next character instead (or left as is at the end). Length is preserved.
  """
  rng = random.Random(seed)
  chars = list(text)
  pool = sorted({c for c in text if not c.isspace()})  # sorted: set order is not portable
  for i in _positions(len(chars), rate, rng):
    want_swap = rng.random() < 0.5
    if (want_swap or chars[i].isspace()) and i + 1 < len(chars):
      chars[i], chars[i + 1] = chars[i + 1], chars[i]
    elif not chars[i].isspace():
      chars[i] = _substitute(chars[i], pool, rng)
  return "".join(chars)


PERTURBATIONS: dict[str, Callable[[str, int], str]] = {
    "antspeak": lambda text, seed: ant_speak(text),
    "drop": lambda text, seed: drop(text, seed=seed),
    "randomcase": lambda text, seed: random_case(text, seed=seed),
    "repeat": lambda text, seed: repeat(text, seed=seed),
    "uppercase": lambda text, seed: upper_case(text),
    "typo": lambda text, seed: typo(text, seed=seed),
    "nospace": lambda text, seed: no_space(text),
}


def perturb(name: str, text: str, seed: int = 0) -> str:
  """Apply the registered perturbation `name` with its default parameters."""
  if name not in PERTURBATIONS:
    raise ValueError(f"unknown perturbation {name!r}; known: {', '.join(sorted(PERTURBATIONS))}")
  return PERTURBATIONS[name](text, seed)


# The five noises of the BLT paper's noised HellaSwag (and the H-Net paper's robustness table).
PAPER_PERTURBATIONS = ("antspeak", "drop", "randomcase", "repeat", "uppercase")


def item_seed(seed: int, context: str) -> int:
  """The seed an item is noised with: from its (clean) context, so the noise an item gets does not
  depend on which other items are evaluated or in what order (lm-eval sees one document at a time)."""
  return (seed + zlib.crc32(context.encode("utf-8"))) % 2**32
