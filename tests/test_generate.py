"""Cached incremental decoding equals the full forward pass; sampling behaves."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hnet import BOS_ID
from hnet.model.generate import AttentionCache, Decoder, generate, sample_logits, step_logits
from tests.helpers import FAMILIES, forward, tiny_model


def _rows(batch: int, length: int, seed: int):
  rng = np.random.default_rng(seed)
  alphabet = np.frombuffer("abc defgh ij, klm\nnopé".encode(), np.uint8)
  tokens = rng.choice(alphabet, size=(batch, length)).astype(np.int32)
  tokens[:, 0] = BOS_ID
  tokens[1, 1:12] = ord(" ")  # rows get different boundary patterns
  return jnp.asarray(tokens)


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_steps_equal_full_forward(family):
  overrides = {"capacity_slack": 1.0} if family != "flat" else {}
  model = tiny_model(family, **overrides)
  tokens = _rows(3, 72, seed=0)  # long enough for the blocked local attention of `default`
  graphdef, state = nnx.split(model)
  full = jax.jit(lambda st, t: nnx.merge(graphdef, st)(t)[0])(state, tokens)
  stepped = jax.jit(lambda st, t: step_logits(nnx.merge(graphdef, st), t))(state, tokens)
  np.testing.assert_allclose(np.asarray(stepped), np.asarray(full), atol=1e-4, rtol=1e-4)


def test_local_attention_cache_holds_only_the_window():
  """`hnet_attn` has a 15-key window: its byte-level KV caches are rings of 16 slots, whatever max_len."""
  state = Decoder(tiny_model("hnet_attn"), max_len=1024).init(2)
  caches = [c for c in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, AttentionCache))
            if isinstance(c, AttentionCache)]
  slots = sorted({c.k_BSHK.shape[2] for c in caches})  # (layers, B, S, H, K)
  assert slots[0] == 16 and slots[-1] < 1024  # byte-level ring; inner stage cache sized by its capacity


def test_generate_is_seeded_and_batched():
  model = tiny_model("hnet_1stage")
  prompts = [b"hello", "ça va ".encode(), b""]
  a = generate(model, prompts, max_new_bytes=12, seed=3, stop_at_eos=False)
  b = generate(model, prompts, max_new_bytes=12, seed=3, stop_at_eos=False)
  c = generate(model, prompts, max_new_bytes=12, seed=4, stop_at_eos=False)
  assert a == b and a != c
  assert [len(x) for x in a] == [12, 12, 12]
  greedy = generate(model, prompts[:1], max_new_bytes=8, temperature=0.0, stop_at_eos=False)[0]
  # Greedy generation picks the full forward pass's argmax at every generated position.
  seq = jnp.asarray([[BOS_ID, *b"hello", *greedy]])
  logits, _ = forward(model, seq, jnp.ones_like(seq))
  assert bytes(np.asarray(jnp.argmax(logits[0, 5:-1], axis=-1)).tolist()) == greedy


def test_top_k_and_top_p_restrict_the_support():
  logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
  keys = jax.random.split(jax.random.key(0), 200)
  topk = {int(sample_logits(k, logits, 1.0, 2, 1.0)[0]) for k in keys}
  topp = {int(sample_logits(k, logits, 1.0, 0, 0.7)[0]) for k in keys}
  assert topk == {0, 1} and topp == {0, 1}
  assert int(sample_logits(keys[0], logits, 0.0, 0, 1.0)[0]) == 0


def test_generate_rejects_bad_arguments():
  model = tiny_model("flat")
  with pytest.raises(ValueError, match="no prompts"):
    generate(model, [])
  with pytest.raises(ValueError, match="max_new_bytes"):
    generate(model, [b"a"], max_new_bytes=0)
  for kwargs, key in [({"temperature": -1.0}, "temperature"), ({"temperature": float("nan")}, "temperature"),
                      ({"top_k": -1}, "top_k"), ({"top_k": 257}, "top_k"), ({"top_p": -3.0}, "top_p"),
                      ({"top_p": 0.0}, "top_p"), ({"top_p": float("nan")}, "top_p")]:
    with pytest.raises(ValueError, match=f"generate: {key} must be"):  # before anything is compiled
      generate(model, [b"a"], **kwargs)
