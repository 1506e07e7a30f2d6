"""Splash attention (Pallas interpret mode on CPU) against the XLA path; 'auto'; sharding; TPU lowering."""
# pylint: disable=invalid-name
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from hnet import sharding
from hnet.config import model_config_from_dict
from hnet.configs import base
from hnet.kernels import splash
from hnet.layers.attention import Attention, DocumentMask, layer_mask

L = 384  # tiles of 128: a 3 x 3 block grid, so the kernel skips and masks blocks
H, K = 4, 16
WINDOWS = (-1, 20)  # global causal; a window shorter than a tile


def packed_segments(B=2, L=L):
  """Rows of packed documents (boundaries off the tiles), a one-token document, a padding tail (0)."""
  rows = [[1] * (L // 4) + [2] * (L // 4 - 10) + [3] * (L // 2 - 20) + [0] * 30,
          [4] * 5 + [5] + [6] * (L - 6)]
  return jnp.array([rows[b % 2] for b in range(B)], jnp.int32)


def _layer(implementation, D=H * K, num_heads=H):
  with nnx.use_eager_sharding(False):
    return Attention(D, num_heads, rotary_dim=8, init_std=0.3, out_init_std=0.3, implementation=implementation,
                     rngs=nnx.Rngs(params=0))


def _outputs_and_grads(implementation, mask_fn, x_BLD, seg_BL, key_bias_BL=None, jit=jax.jit):
  """The layer's output and the gradients of a loss w.r.t. its parameters and its input."""
  graphdef, params = nnx.split(_layer(implementation, D=x_BLD.shape[-1]))
  pos_BL = jnp.broadcast_to(jnp.arange(x_BLD.shape[1]), seg_BL.shape)

  def loss(params, x_BLD):
    y_BLD = nnx.merge(graphdef, params)(x_BLD, pos_BL, mask_fn(seg_BL), key_bias_BL)
    return jnp.sum(jnp.sin(y_BLD)), y_BLD

  (_, y_BLD), grads = jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(params, x_BLD)
  return y_BLD, grads


def _close(a, a_ref, tol, name=""):
  """Within `tol` of the reference, relative to the larger of 1 and the reference's largest entry:
  weight gradients sum B·L terms and reach ~100, where float32 summation order alone moves 1e-4."""
  a, a_ref = np.asarray(a), np.asarray(a_ref)
  np.testing.assert_allclose(a, a_ref, atol=tol * max(1.0, float(np.abs(a_ref).max())), rtol=tol, err_msg=name)


def _assert_close(a, b, tol=1e-4):
  (y, (gp, gx)), (y_ref, (gp_ref, gx_ref)) = a, b
  _close(y, y_ref, tol, "output")
  _close(gx, gx_ref, tol, "d input")
  for (path, g), (_, g_ref) in zip(nnx.to_flat_state(gp), nnx.to_flat_state(gp_ref)):
    _close(g[...], g_ref[...], tol, str(path))


def _x(B=2, L=L, D=H * K, seed=1):
  return jax.random.normal(jax.random.key(seed), (B, L, D))


@pytest.mark.parametrize("window", WINDOWS)
def test_kernel_equals_xla_outputs_and_qkv_gradients(window):
  q, k, v, w = (jax.random.normal(jax.random.key(i), (2, L, H, K)) for i in range(4))
  seg = packed_segments()

  def run(attend):
    loss = lambda q, k, v: jnp.sum(attend(q, k, v) * w)  # noqa: E731
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(q, k, v)

  kernel = run(lambda q, k, v: splash.splash_attention(q, k, v, seg, window=window, interpret=True))
  pos = jnp.arange(L)
  near_LL = (pos[None, :] <= pos[:, None]) & ((pos[:, None] - pos[None, :] <= window) | (window < 0))
  mask = ((seg[:, :, None] == seg[:, None, :]) & near_LL[None])[:, None]  # dense, not attention_mask's blocks
  xla = run(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, mask=mask))
  for a, b, name in zip(jax.tree.leaves(kernel), jax.tree.leaves(xla), ("loss", "dq", "dk", "dv")):
    _close(a, b, 1e-4, name)


@pytest.mark.parametrize("window", WINDOWS)
def test_splash_layer_equals_xla_layer(window):
  # 'xla' gets the stack's mask (blocked for the window); 'splash' the DocumentMask, run in interpret mode.
  x, seg = _x(), packed_segments()
  _assert_close(_outputs_and_grads("splash", lambda s: layer_mask(s, window, "splash"), x, seg),
                _outputs_and_grads("xla", lambda s: layer_mask(s, window, "xla"), x, seg))


def test_auto_on_cpu_equals_xla():
  x, seg = _x(), packed_segments()
  for window in WINDOWS:
    assert isinstance(layer_mask(seg, window, "auto"), DocumentMask)
    _assert_close(_outputs_and_grads("auto", lambda s, w=window: layer_mask(s, w, "auto"), x, seg),
                  _outputs_and_grads("xla", lambda s, w=window: layer_mask(s, w, "xla"), x, seg), tol=1e-6)


def test_key_bias_and_untileable_lengths_fall_back_to_xla(caplog):
  x, seg = _x(), packed_segments()
  bias = jax.random.uniform(jax.random.key(2), seg.shape, minval=-3.0, maxval=0.0)
  with caplog.at_level(logging.WARNING, logger=splash.log.name):
    for _ in range(2):  # said once, not per call
      got = _outputs_and_grads("splash", lambda s: layer_mask(s, 20, "splash"), x, seg, bias)
  _assert_close(got, _outputs_and_grads("xla", lambda s: layer_mask(s, 20, "xla"), x, seg, bias))
  assert sum("per-key additive bias" in r.getMessage() for r in caplog.records) == 1

  x, seg = _x(L=200), packed_segments(L=200)
  assert "not a multiple of 128" in splash.unsupported(200, False)
  _assert_close(_outputs_and_grads("splash", lambda s: layer_mask(s, -1, "splash"), x, seg),
                _outputs_and_grads("xla", lambda s: layer_mask(s, -1, "xla"), x, seg))


def test_sharded_equals_unsharded():
  # Batch over data x fsdp (4 rows on 4 groups), heads over tensor (4 heads on 2): the kernel in shard_map.
  mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
  x, seg = _x(B=4), packed_segments(B=4)
  mask_fn = lambda s: layer_mask(s, 20, "splash")  # noqa: E731
  with jax.set_mesh(mesh):
    xs = jax.device_put(x, NamedSharding(mesh, P(sharding.BATCH_AXES)))
    segs = jax.device_put(seg, sharding.batch_sharding(mesh))
    got = _outputs_and_grads("splash", mask_fn, xs, segs)
    graphdef, params = nnx.split(_layer("splash"))
    pos = jnp.broadcast_to(jnp.arange(L), seg.shape)
    jaxpr = jax.make_jaxpr(lambda p, x: nnx.merge(graphdef, p)(x, pos, mask_fn(segs)))(params, xs)
  assert "shard_map" in str(jaxpr)
  _assert_close(got, _outputs_and_grads("splash", mask_fn, x, seg))


@pytest.mark.parametrize("impl", ["splash"])
def test_model_loss_and_gradients_equal_xla(impl):
  # configs/hnet_attn.py at tiny width: window-15 encoder/decoder at L = 256 and the inner Transformer at
  # the chunk capacity 128, scanned (interpret mode on CPU for splash).
  from tests.helpers import packed_batch, tiny_model  # pylint: disable=import-outside-toplevel
  from tests.helpers import loss_fn as _loss_fn  # pylint: disable=import-outside-toplevel
  tokens, seg = packed_batch(2, 256, seed=1)

  def loss_and_grads(attention_impl):
    model = tiny_model("hnet_attn", attention_impl=attention_impl, capacity_multiple=128, remat="none")
    graphdef, state = nnx.split(model)
    step = jax.jit(jax.value_and_grad(_loss_fn, has_aux=True), static_argnums=(1, 4))
    (loss, _), grads = step(state, graphdef, tokens, seg, True)
    return loss, grads

  (loss, grads), (loss_ref, grads_ref) = loss_and_grads(impl), loss_and_grads("xla")
  _close(loss, loss_ref, 1e-5, "loss")
  for (path, g), (_, g_ref) in zip(nnx.to_flat_state(grads), nnx.to_flat_state(grads_ref)):
    _close(g[...], g_ref[...], 1e-4, str(path))


def test_config_accepts_auto_and_splash():
  c = base.get_config("tiny")
  assert c.model.attention_impl == "auto"
  for impl in ("auto", "splash", "default", "cudnn", "xla"):
    c.model.attention_impl = impl
    assert model_config_from_dict(c.model).attention_impl == impl
  c.model.attention_impl = "flash"
  with pytest.raises(ValueError, match="model.attention_impl='flash'"):
    model_config_from_dict(c.model)


def test_splash_lowers_for_tpu_with_mosaic():
  # Ahead-of-time for a v5p topology from this CPU host ('auto' under a mesh, as train.py --aot does):
  # the compiled program holds the splash kernels, forward and backward. Longer cases: bench/splash_aot.py.
  from bench.cost_model import kernels  # pylint: disable=import-outside-toplevel
  from bench.splash_aot import compile_attention, tpu_mesh  # pylint: disable=import-outside-toplevel
  compiled = compile_attention(tpu_mesh("v5p:2x2x1"), batch=2, seq_len=1024, num_heads=4, head_dim=128,
                               window=127, impl="auto")
  assert "tpu_custom_call" in compiled.as_text()
  names = kernels(compiled)
  assert any("splash" in n and "fwd" in n for n in names), names
  assert any("splash" in n and "dkv" in n for n in names), names
