"""Router rules on hand-made inputs."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hnet.model.routers.cosine import CosineRouter, ratio_loss
from hnet.model.routers.delete_gate import DeleteGateRouter
from hnet.model.routers.stride import StrideRouter
from hnet.model.routers.whitespace import WhitespaceRouter


def _call(router, x=None, tokens=None, seg=None, train=False):
  seg = jnp.ones(tokens.shape if tokens is not None else x.shape[:2], jnp.int32) if seg is None else seg
  from hnet.model.chunking import positions_in_document
  return router(x, tokens_BL=tokens, segment_ids_BL=seg, positions_BL=positions_in_document(seg), train=train)


def test_whitespace_router_marks_word_starts():
  text = "hi there, ça va?\n"
  tokens = jnp.asarray([list(text.encode())], jnp.int32)
  out = _call(WhitespaceRouter(), tokens=tokens)
  starts = [i for i, b in enumerate(np.asarray(out.boundary_BL[0])) if b]
  # 'h'(0) 't'(3) ... 'ç' is a 2-byte char: its lead byte is spacelike, the continuation starts the word.
  raw = text.encode()
  assert starts[:2] == [0, 3]
  assert raw.index("ç".encode()) + 1 in starts and raw.index(b"va") in starts


def test_stride_router_restarts_at_documents():
  seg = jnp.asarray([[1] * 6 + [2] * 5])
  out = _call(StrideRouter(stride=3), x=jnp.zeros((1, 11, 4)), seg=seg)
  np.testing.assert_array_equal(out.boundary_BL[0], [1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0])


def test_cosine_router_probability_and_ratio_loss():
  x = jnp.asarray([[[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]]])
  with nnx.use_eager_sharding(False):
    router = CosineRouter(2, target_ratio=2.0)
  out = _call(router, x=x)
  np.testing.assert_allclose(out.prob_BL[0], [1.0, 0.0, 1.0, 0.5], atol=1e-6)
  np.testing.assert_array_equal(out.boundary_BL[0], [1, 0, 1, 0])  # 0.5 is not > 0.5
  assert abs(float(ratio_loss(jnp.float32(0.25), jnp.float32(0.25), 4.0)) - 1.0) < 1e-6
  grad_g = jax.grad(lambda g: ratio_loss(jnp.float32(0.25), g, 4.0))(jnp.float32(0.25))
  assert abs(float(grad_g)) < 1e-6


def test_delete_gate_keeps_most_at_init_and_soft_bias_only_in_training():
  with nnx.use_eager_sharding(False):
    router = DeleteGateRouter(8, scale=-30.0, rngs=nnx.Rngs(params=0))
  x = jax.random.normal(jax.random.key(0), (2, 12, 8))
  hard = _call(router, x=x)
  soft = _call(router, x=x, train=True)
  assert hard.key_bias_BL is None and soft.key_bias_BL is not None
  g = router.gate(x)
  np.testing.assert_array_equal(hard.boundary_BL[:, 1:], g[:, 1:] > -15.0)  # kept iff G > k/2
  assert bool(jnp.all(hard.boundary_BL[:, 0]))  # the document start is always kept
  assert 0.0 < float(hard.metrics["delete_frac"]) < 0.5  # bias b = 1 favours keeping
  assert bool(jnp.all(soft.key_bias_BL <= 0)) and bool(jnp.all(soft.key_bias_BL > -30))


def test_saturated_delete_gate_soft_training_equals_hard_inference():
  """Gate saturated to keep about half of the bytes: soft deletion (train) == hard deletion (eval)."""
  from tests.helpers import forward, packed_batch, tiny_model
  model = tiny_model("mrt5", capacity_slack=2.0)  # target 2: budgets hold every kept position
  router = model.backbone.router
  d = router.w.shape[0]
  router.w[...] = 1e4 * jax.random.normal(jax.random.key(0), (d, 1)) / d**0.5
  router.b[...] = jnp.zeros((1,))
  tokens, seg = packed_batch(2, 64, seed=3)
  soft, aux = forward(model, tokens, seg, True)
  hard, _ = forward(model, tokens, seg, False)
  delete_frac = float(aux["metrics"]["stage0/delete_frac"])
  assert 0.3 < delete_frac < 0.7, delete_frac
  h_BLD, _, _, _ = model.backbone.route(model.embed(tokens), seg)
  gate = np.asarray(router.gate(h_BLD))
  assert np.all((gate > -1e-6) | (gate < -30 + 1e-6)), "the gate is not saturated everywhere"
  valid = np.asarray(seg) > 0
  np.testing.assert_allclose(np.asarray(soft)[valid], np.asarray(hard)[valid], atol=1e-4, rtol=0)
