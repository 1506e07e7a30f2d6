"""Attention, RoPE and SwiGLU."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import pytest

from hnet.layers.attention import (Attention, BlockMask, attention_mask, dense_attention, layer_mask,
                                  window_block_size)
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


@pytest.mark.parametrize("window,length", [(15, 64), (15, 77), (5, 40), (0, 33)])
def test_blocked_sliding_window_equals_full_mask(window, length):
  """The blocked form (O(L·S)) gives the masked full form's outputs and gradients."""
  assert window_block_size(window, length) > 0
  with nnx.use_eager_sharding(False):
    attn = Attention(16, 2, rotary_dim=4, init_std=0.3, out_init_std=0.3, rngs=nnx.Rngs(params=0))
  x = jax.random.normal(jax.random.key(1), (2, length, 16))
  seg = np.ones((2, length), np.int32)
  seg[0, length // 3:] = 2  # two packed documents, then padding
  seg[0, length - 5:] = 0
  seg[1, 17:] = 3
  seg = jnp.asarray(seg)
  pos = jnp.broadcast_to(jnp.arange(length), (2, length))
  bias = jax.random.uniform(jax.random.key(2), (2, length), minval=-3.0, maxval=0.0)
  blocked = attention_mask(seg, window)
  assert isinstance(blocked, BlockMask)
  L = jnp.arange(length)
  near_LL = (L[None, :] <= L[:, None]) & (L[:, None] - L[None, :] <= window)
  full = ((seg[:, :, None] == seg[:, None, :]) & near_LL[None])[:, None]

  def loss(x, mask):
    y = attn(x, pos, mask, bias)
    return jnp.sum(jnp.sin(y)), y

  # Jitted: one compile per form instead of one per eager op.
  grad = lambda mask: jax.jit(jax.value_and_grad(lambda x: loss(x, mask), has_aux=True))(x)
  (_, y_blocked), g_blocked = grad(blocked)
  (_, y_full), g_full = grad(full)
  np.testing.assert_allclose(y_blocked, y_full, atol=1e-5)
  np.testing.assert_allclose(g_blocked, g_full, atol=1e-5)


def test_window_block_size_uses_full_form_when_cheaper():
  assert window_block_size(-1, 4096) == 0  # global attention
  assert window_block_size(15, 256) == 16 and window_block_size(16, 256) == 24
  assert window_block_size(15, 48) == 0  # 2S keys per query would be most of L
  assert not isinstance(attention_mask(jnp.ones((1, 48), jnp.int32), 15), BlockMask)


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


def test_dense_attention_tells_only_cudnn_that_the_mask_is_causal(monkeypatch):
  # cuDNN skips the blocks above the diagonal only with is_causal (+38% flat-model bytes/s on an H200);
  # the mask already holds causality, so adding it for XLA too would only repeat that work.
  seg_BL = jnp.array([[1, 1, 2, 2, 2, 0]], jnp.int32)
  q_BLHK = jax.random.normal(jax.random.key(0), (1, 6, 2, 8))
  mask_B1LL = attention_mask(seg_BL)
  seen = []
  real = jax.nn.dot_product_attention
  monkeypatch.setattr(jax.nn, "dot_product_attention",
                      lambda *a, **kw: seen.append(kw["is_causal"]) or real(*a, **{**kw, "implementation": "xla"}))
  out_cudnn = dense_attention(q_BLHK, q_BLHK, q_BLHK, mask_B1LL, implementation="cudnn")
  out_xla = dense_attention(q_BLHK, q_BLHK, q_BLHK, mask_B1LL, implementation="xla")
  assert seen == [True, False]
  np.testing.assert_array_equal(out_cudnn, out_xla)  # causal on top of a causal mask changes nothing


@pytest.mark.parametrize("window", [-1, 7])
@pytest.mark.parametrize("implementation", ["default", "auto"])
def test_softmax1_attention_is_exp_over_one_plus_the_sum(window, implementation):
  """softmax₁ (MrT5): weights exp(s) / (1 + Σ exp(s)) over the visible keys, by hand, in the dense and the
  blocked (sliding window) forms and through 'auto' (which must leave splash for XLA)."""
  H, K, L = 2, 8, 40
  with nnx.use_eager_sharding(False):
    attn = Attention(H * K, H, rotary_dim=4, init_std=0.3, out_init_std=0.3, implementation=implementation,
                     softmax1=True, rngs=nnx.Rngs(params=0))
  x = jax.random.normal(jax.random.key(1), (2, L, H * K))
  seg = jnp.asarray(np.repeat([[1] * 25 + [2] * 10 + [0] * 5], 2, axis=0), jnp.int32)
  pos = jnp.broadcast_to(jnp.arange(L), (2, L))
  bias = jax.random.uniform(jax.random.key(2), (2, L), minval=-3.0, maxval=0.0)
  mask = layer_mask(seg, window, implementation)
  y = attn(x, pos, mask, bias)

  q, k, v = attn.qkv(x, pos)
  s_BHLL = jnp.einsum("blhk,bmhk->bhlm", q, k) / K**0.5 + bias[:, None, None, :]
  i = jnp.arange(L)
  visible = (seg[:, :, None] == seg[:, None, :]) & (i[None, :, None] >= i[None, None, :])
  if window >= 0:
    visible &= (i[:, None] - i[None, :] <= window)[None]
  e_BHLL = jnp.where(visible[:, None], jnp.exp(s_BHLL), 0.0)
  w_BHLL = e_BHLL / (1.0 + e_BHLL.sum(-1, keepdims=True))
  want = attn.out_proj(jnp.einsum("bhlm,bmhk->blhk", w_BHLL, v).reshape(2, L, H * K))
  valid = np.asarray(seg) > 0
  np.testing.assert_allclose(np.asarray(y)[valid], np.asarray(want)[valid], atol=1e-5)
  # A row of plain softmax differs: the weights there sum to 1.
  with nnx.use_eager_sharding(False):
    plain = Attention(H * K, H, rotary_dim=4, init_std=0.3, out_init_std=0.3, implementation=implementation,
                      rngs=nnx.Rngs(params=0))
  assert not np.allclose(np.asarray(plain(x, pos, mask, bias))[valid], np.asarray(want)[valid], atol=1e-3)
