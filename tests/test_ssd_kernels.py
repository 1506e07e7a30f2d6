"""Pallas SSD kernels (TPU Mosaic, GPU Triton) in interpret mode against the sequential reference."""
# pylint: disable=invalid-name
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hnet.config import model_config_from_dict
from hnet.configs import base
from hnet.kernels.ssd import ssd_pallas
from hnet.kernels.ssd_xla import ssd_naive
from hnet.layers.mamba2 import Mamba2
from tests.helpers import packed_segments, ssd_inputs

L = 45  # not a multiple of the chunk: the last chunk is padded


def _loss_and_outputs(fn, args, seg, wy, ws):
  y, s = fn(*args[:5], segment_ids_BL=seg, initial_state_BHPN=args[5])
  return jnp.sum(y * wy) + jnp.sum(s * ws), (y, s)


@pytest.mark.parametrize("backend", ["tpu", "gpu"])
def test_kernel_matches_naive_with_resets_initial_state_and_groups(backend):
  # Two groups of two heads: the TPU kernel's head blocks and both kernels' per-group dB, dC sums.
  args = ssd_inputs(B=2, L=L, H=4, P=16, G=2, N=16)
  seg = packed_segments(L)
  rng = np.random.default_rng(7)
  wy = jnp.asarray(rng.normal(size=args[0].shape), jnp.float32)
  ws = jnp.asarray(rng.normal(size=args[5].shape), jnp.float32)
  kernel = functools.partial(ssd_pallas, chunk_size=16, backend=backend, interpret=True)
  run = lambda fn: jax.jit(jax.value_and_grad(  # noqa: E731
      lambda a: _loss_and_outputs(fn, a, seg, wy, ws), has_aux=True))(args)
  (_, (y, s)), g = run(kernel)
  (_, (y_ref, s_ref)), g_ref = run(ssd_naive)
  np.testing.assert_allclose(y, y_ref, atol=1e-4)
  np.testing.assert_allclose(s, s_ref, atol=1e-4)
  for name, gi, gi_ref in zip(("x", "dt", "A", "B", "C", "initial state"), g, g_ref):
    np.testing.assert_allclose(gi, gi_ref, atol=1e-4, rtol=1e-4, err_msg=name)


def test_kernel_bf16_gradients_of_dt_and_A_stay_close_to_fp32(backend="tpu"):
  # As for ssd_chunked: row and column terms of d(cumsum) must come from the same rounded values (the
  # per-chunk maths is shared by both kernels).
  x, dt, A, Bm, Cm, _ = ssd_inputs(B=2, L=256, H=4, P=16, N=16)
  seg = jnp.asarray(np.repeat(np.array([[1] * 150 + [2] * 106]), 2, 0), jnp.int32)
  wy = jnp.asarray(np.random.default_rng(9).normal(size=x.shape), jnp.float32)

  def grads(dtype):
    def loss(dt, A):
      y, _ = ssd_pallas(x.astype(dtype), dt, A, Bm.astype(dtype), Cm.astype(dtype), chunk_size=64,
                        segment_ids_BL=seg, backend=backend, interpret=True)
      return jnp.sum(y.astype(jnp.float32) * wy)
    return jax.jit(jax.grad(loss, argnums=(0, 1)))(dt, A)

  rel = lambda a, b: float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))  # noqa: E731
  (ddt16, dA16), (ddt32, dA32) = grads(jnp.bfloat16), grads(jnp.float32)
  assert rel(ddt16, ddt32) < 1e-2 and rel(dA16, dA32) < 8e-3, (rel(ddt16, ddt32), rel(dA16, dA32))


def test_gpu_kernel_splits_long_chunks():
  # Chunks longer than GPU_MAX_CHUNK (128) run as 128-position chunks: same outputs.
  x, dt, A, Bm, Cm, S0 = ssd_inputs(B=1, L=150, H=2, P=16, N=16)
  y, s = jax.jit(functools.partial(ssd_pallas, chunk_size=256, backend="gpu", interpret=True))(
      x, dt, A, Bm, Cm, initial_state_BHPN=S0)
  y_ref, s_ref = jax.jit(ssd_naive)(x, dt, A, Bm, Cm, initial_state_BHPN=S0)
  np.testing.assert_allclose(y, y_ref, atol=1e-4)
  np.testing.assert_allclose(s, s_ref, atol=1e-4)


def test_mamba2_layer_with_pallas_equals_xla():
  # On CPU, ssd_impl='pallas' picks the TPU kernel in interpret mode (jax.lax.platform_dependent).
  x = jnp.asarray(np.random.default_rng(3).normal(size=(2, L, 32)), jnp.float32)
  seg = packed_segments(L)

  def outputs_and_grads(impl):
    with nnx.use_eager_sharding(False):
      layer = Mamba2(32, d_state=16, expand=2, head_dim=16, d_conv=4, chunk_size=16, init_std=0.2,
                     out_init_std=0.2, ssd_impl=impl, rngs=nnx.Rngs(params=0))
    graphdef, params = nnx.split(layer)
    f = lambda p: jnp.sum(nnx.merge(graphdef, p)(x, seg) ** 2)  # noqa: E731
    return jax.jit(jax.value_and_grad(f))(params)

  (v, g), (v_ref, g_ref) = outputs_and_grads("pallas"), outputs_and_grads("xla")
  np.testing.assert_allclose(v, v_ref, rtol=1e-5)
  for (path, gi), (_, gi_ref) in zip(nnx.to_flat_state(g), nnx.to_flat_state(g_ref)):
    np.testing.assert_allclose(gi[...], gi_ref[...], atol=1e-4, rtol=1e-4, err_msg=str(path))


def test_sizes_the_kernels_cannot_tile_raise():
  x, dt, A, Bm, Cm, _ = ssd_inputs(L=32, P=16, N=16)
  with pytest.raises(ValueError, match="chunk_size=24 must be a power of two"):
    ssd_pallas(x, dt, A, Bm, Cm, chunk_size=24)
  with pytest.raises(ValueError, match="backend='cpu'"):
    ssd_pallas(x, dt, A, Bm, Cm, chunk_size=16, backend="cpu")
  c = base.get_config("tiny")
  c.model.ssd_impl = "pallas"
  model_config_from_dict(c.model)  # 16 / 16 / 16: accepted
  c.model.ssm_chunk_size = 24
  with pytest.raises(ValueError, match="model.ssm_chunk_size=24"):
    model_config_from_dict(c.model)
  c.model.ssd_impl = "triton"
  with pytest.raises(ValueError, match="model.ssd_impl='triton'"):
    model_config_from_dict(c.model)
