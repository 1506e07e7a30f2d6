"""Noise perturbations: determinism, rates, character safety, edge cases."""
import random

import pytest

from hnet.evals import perturbations

LONG = " ".join(random.Random(1).choice(["alpha", "Beta", "gamma", "delta,", "EPS", "zeta."])
                for _ in range(1000))
MULTI = "Καλημέρα κόσμε, 日本語のテキスト 🙂🙃👍 çava naïve " * 20
SEEDED = ["drop", "randomcase", "repeat", "typo"]


@pytest.mark.parametrize("name", SEEDED)
def test_seeded_is_deterministic(name):
  assert perturbations.perturb(name, LONG, 3) == perturbations.perturb(name, LONG, 3)
  assert perturbations.perturb(name, LONG, 3) != perturbations.perturb(name, LONG, 4)


def test_drop_rate():
  out = perturbations.drop(LONG, rate=0.1, seed=0)
  assert len(LONG) - len(out) == round(0.1 * len(LONG))
  assert abs(len(out) / len(LONG) - 0.9) < 0.01


def test_uppercase_idempotent_and_antspeak():
  assert perturbations.upper_case(perturbations.upper_case(LONG)) == perturbations.upper_case(LONG)
  assert perturbations.ant_speak("ab") == "A B"
  assert perturbations.ant_speak("a b") == "A   B"


def test_randomcase_preserves_casefold_and_mixes():
  out = perturbations.random_case(LONG, seed=1)
  assert out.casefold() == LONG.casefold()
  letters = [c for c in out if c.isalpha()]
  frac_upper = sum(c.isupper() for c in letters) / len(letters)
  assert 0.4 < frac_upper < 0.6


def _collapse(s):
  return "".join(c for i, c in enumerate(s) if i == 0 or c != s[i - 1])


def test_repeat_only_duplicates_neighbours():
  out = perturbations.repeat(LONG, rate=0.2, max_repeats=4, seed=2)
  assert _collapse(out) == _collapse(LONG)
  # Expected growth: rate * len * mean(1..4) = 0.2 * 2.5 = 0.5 of the length.
  growth = (len(out) - len(LONG)) / len(LONG)
  assert 0.4 < growth < 0.6


def test_nospace():
  out = perturbations.no_space("a b\tc\nd  e\u3000f")
  assert out == "abcdef"
  assert not any(c.isspace() for c in perturbations.no_space(LONG))


def test_typo_rate_and_keyboard():
  out = perturbations.typo(LONG, rate=0.05, seed=0)
  assert len(out) == len(LONG)
  changed = [i for i, (a, b) in enumerate(zip(LONG, out)) if a != b]
  assert 0 < len(changed) <= 2 * round(0.05 * len(LONG))
  subs = 0
  for i in changed:
    window = LONG[max(0, i - 2):i + 3]  # swaps and a substitution may chain on neighbours
    if out[i] in window:
      continue
    near = {n.upper() if c.isupper() else n
            for c in window for n in perturbations.QWERTY_NEIGHBOURS.get(c.lower(), "")}
    assert out[i] in near
    subs += 1
  assert subs > 0


def test_typo_substitution_pools():
  text = "Ωμέγα!"
  for seed in range(20):
    out = perturbations.typo(text, rate=1.0, seed=seed)
    assert sorted(out) != [] and set(out) <= set(text)  # non-ASCII draws from the text itself


def test_qwerty_neighbours_are_symmetric():
  for k, near in perturbations.QWERTY_NEIGHBOURS.items():
    assert near and k not in near
    assert all(k in perturbations.QWERTY_NEIGHBOURS[j] for j in near)


@pytest.mark.parametrize("name", sorted(perturbations.PERTURBATIONS))
def test_multibyte_safe(name):
  for seed in range(3):
    out = perturbations.perturb(name, MULTI, seed)
    out.encode("utf-8")  # no lone surrogates or split characters
    if name in ("drop", "repeat", "typo"):
      # MULTI's ASCII letters may be substituted by QWERTY neighbours; nothing else is new.
      assert all(c in MULTI or (name == "typo" and c.isascii() and c.isalpha()) for c in out)


@pytest.mark.parametrize("name", sorted(perturbations.PERTURBATIONS))
def test_empty(name):
  assert perturbations.perturb(name, "", 0) == ""


def test_unknown_name():
  with pytest.raises(ValueError, match="known: antspeak, drop"):
    perturbations.perturb("shout", "x", 0)


def test_bad_rate():
  with pytest.raises(ValueError, match="rate"):
    perturbations.drop("abc", rate=1.5)
