"""Attention, RoPE and SwiGLU."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hnet.layers.attention import Attention, attention_mask
from hnet.layers.rope import apply_rope


def test_rope_scores_depend_only_on_relative_position():
  q = jax.random.normal(jax.random.key(0), (1, 1, 1, 16))
  k = jax.random.normal(jax.random.key(1), (1, 1, 1, 16))

  def score(pq, pk):
    qr = apply_rope(q, jnp.array([[pq]]), 8)
    kr = apply_rope(k, jnp.array([[pk]]), 8)
    return float(jnp.sum(qr * kr))

  assert abs(score(5, 3) - score(12, 10)) < 1e-4
  assert abs(score(5, 3) - score(5, 4)) > 1e-4
  np.testing.assert_allclose(apply_rope(q, jnp.array([[7]]), 8)[..., 8:], q[..., 8:])


def test_attention_mask_window_and_documents():
  seg = jnp.array([[1, 1, 1, 2, 2, 0]])
  m = np.asarray(attention_mask(seg, window=1)[0, 0])
  assert m[2, 1] and m[2, 2] and not m[2, 0]  # window of one key back
  assert not m[3, 2] and m[4, 3]  # documents
  assert m[5, 5] and not m[5, 4]  # padding only sees padding


def test_attention_is_causal_and_bias_deletes_keys():
  with nnx.use_eager_sharding(False):
    attn = Attention(16, 2, rotary_dim=4, init_std=0.2, out_init_std=0.2, rngs=nnx.Rngs(params=0))
  x = jax.random.normal(jax.random.key(2), (1, 6, 16))
  pos = jnp.arange(6)[None]
  mask = attention_mask(jnp.ones((1, 6), jnp.int32))
  y = attn(x, pos, mask)
  y2 = attn(x.at[:, 4].set(0.0), pos, mask)
  np.testing.assert_allclose(y[:, :4], y2[:, :4], atol=1e-6)
  # A -30 bias on key 1 makes it (almost) invisible: same as replacing its content.
  bias = jnp.zeros((1, 6)).at[:, 1].set(-30.0)
  y3 = attn(x, pos, mask, bias)
  y4 = attn(x.at[:, 1].set(5.0), pos, mask, bias)
  np.testing.assert_allclose(y3[:, 2:], y4[:, 2:], atol=1e-4)
