"""Model properties: causality (packed, near capacity), compile once, gradients, overflow, sharding."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from hnet import sharding
from tests.helpers import FAMILIES, forward, load_config, loss_fn, packed_batch, tiny_model

# (family, train flag): the delete gate differs between soft (train) and hard (eval) deletion.
CASES = [(f, False) for f in FAMILIES] + [("mrt5", True), ("hnet_1stage", True)]


@pytest.mark.parametrize("family,train", CASES)
def test_causality_with_packed_documents(family, train):
  """Changing bytes from position t on never changes logits before t (fp32, 1e-5)."""
  # Small capacity so that boundaries overflow and get dropped: the cut must stay causal.
  overrides = {"capacity_slack": 1.0} if family != "flat" else {}
  model = tiny_model(family, **overrides)
  tokens, seg = packed_batch(2, 64, seed=1)
  logits, _ = forward(model, tokens, seg, train)
  rng = np.random.default_rng(0)
  for t in (5, 21, 22, 40, 63):
    changed = np.array(tokens)
    changed[:, t:] = rng.integers(0, 256, size=changed[:, t:].shape)
    logits2, _ = forward(model, jnp.asarray(changed), seg, train)
    np.testing.assert_allclose(logits2[:, :t], logits[:, :t], atol=1e-5, rtol=0,
                               err_msg=f"{family}: logits before {t} changed")
    if t <= 22:  # later bytes may all fall in the last chunk once capacity is used up (W_res = 0 at init)
      assert not np.allclose(logits2[:, t:], logits[:, t:]), f"perturbation at {t} had no effect at all"


def test_documents_do_not_see_each_other():
  """A document's logits do not depend on an earlier document packed in the same row."""
  model = tiny_model("hnet_2stage")
  tokens, seg = packed_batch(2, 64, seed=2)
  logits, _ = forward(model, tokens, seg)
  changed = np.array(tokens)
  changed[:, :10] = (changed[:, :10] + 7) % 256  # inside document 1 only (row 1's doc 1 is longer)
  logits2, _ = forward(model, jnp.asarray(changed), seg)
  doc2 = np.array(seg) >= 2
  np.testing.assert_allclose(np.asarray(logits2)[doc2], np.asarray(logits)[doc2], atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["hnet_1stage", "mrt5", "hnet_2stage"])
def test_compiles_once_and_gradients_reach_router(family):
  model = tiny_model(family)
  graphdef, state = nnx.split(model)
  step = jax.jit(jax.value_and_grad(loss_fn, has_aux=True), static_argnums=(1, 4))
  tokens, seg = packed_batch(2, 64, seed=3)
  (loss, aux), grads = step(state, graphdef, tokens, seg, True)
  tokens2, _ = packed_batch(2, 64, seed=4, text_like=False)  # different boundary counts
  (loss2, aux2), _ = step(state, graphdef, tokens2, seg, True)
  assert step._cache_size() == 1, "second call with new data recompiled"
  assert any(float(aux["metrics"][k]) != float(aux2["metrics"][k]) for k in aux["metrics"])  # routing differs
  leaves = jax.tree.leaves(grads)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
  router_grads = grads["backbone"]["router"]
  norm = sum(float(jnp.sum(jnp.abs(g))) for g in jax.tree.leaves(router_grads))
  assert norm > 0, f"{family}: no gradient reaches the router parameters"


def test_capacity_overflow_reports_and_stays_finite():
  model = tiny_model("hnet_1stage", target_ratio=(16.0,), capacity_slack=1.0)
  graphdef, state = nnx.split(model)
  tokens, seg = packed_batch(2, 64, seed=5, text_like=False)
  (loss, aux), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True), static_argnums=(1, 4))(
      state, graphdef, tokens, seg, True)
  overflow = float(aux["metrics"]["stage0/overflow_frac"])
  assert 0 < overflow < 1
  assert np.isfinite(float(loss))
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_stride_and_word_routers_compress_as_configured():
  tokens, seg = packed_batch(2, 64, seed=6)
  _, aux = forward(tiny_model("stride"), tokens, seg)
  # Stride 4 within each document: about a quarter of the positions (document starts add a few).
  assert 0.25 <= float(aux["metrics"]["stage0/boundary_frac"]) <= 0.35
  _, aux = forward(tiny_model("word"), tokens, seg)
  assert float(aux["metrics"]["stage0/overflow_frac"]) == 0.0


@pytest.mark.parametrize("family", ["hnet_1stage", "hnet_2stage", "blt"])
def test_sharded_forward_equals_single_device(family):
  model = tiny_model(family)
  tokens, seg = packed_batch(4, 64, seed=7)
  want, _ = forward(model, tokens, seg)
  mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
  graphdef, state = nnx.split(model)
  state_sharding = sharding.param_shardings(state, mesh)
  batch_sharding = sharding.batch_sharding(mesh)
  with jax.set_mesh(mesh):
    sharded_state = jax.device_put(state, state_sharding)
    f = jax.jit(lambda st, t, s: nnx.merge(graphdef, st)(t, s)[0],
                in_shardings=(state_sharding, batch_sharding, batch_sharding))
    got = f(sharded_state, jax.device_put(tokens, batch_sharding), jax.device_put(seg, batch_sharding))
  assert len(got.sharding.device_set) == 8
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=0)
  # Parameters really are split: the largest matmul weights are not replicated.
  specs = [s.spec for s in jax.tree.leaves(state_sharding)]
  assert any("tensor" in str(s) for s in specs) and any("fsdp" in str(s) for s in specs)


# ---------------------------------------------------------------------------------------------
# Packed documents are independent, whatever the overflow
# ---------------------------------------------------------------------------------------------
LEARNED_COSINE = ("hnet_1stage", "hnet_2stage", "hnet_attn")
ISOLATION_CASES = [(f, False) for f in FAMILIES if f != "flat"] + [("mrt5", True), ("hnet_1stage", True)]


def _four_documents(batch: int = 2, length: int = 64, seed: int = 0):
  """Random bytes, 4 documents of different lengths per row and 3 padding positions at the end."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, 256, size=(batch, length)).astype(np.int32)
  seg = np.zeros((batch, length), np.int32)
  # Lengths whose budgets ceil(n / 4) (ratio 4, slack 1) add up to the row's capacity of 16: no row overflow.
  cuts = [(0, 8, 28, 44, 61), (0, 20, 27, 47, 61)]
  for b in range(batch):
    for d in range(4):
      seg[b, cuts[b % 2][d]:cuts[b % 2][d + 1]] = d + 1
  return tokens, seg


def _overflowing_model(family: str):
  """Capacity slack 1; learned routers propose about half of the positions, twice their budgets."""
  if family not in LEARNED_COSINE:
    return tiny_model(family, capacity_slack=1.0)
  stages = len(load_config(family).model.d_model)
  model = tiny_model(family, capacity_slack=1.0, target_ratio=(4.0,) * (stages - 1))
  stage = model.backbone
  while not stage.is_innermost:  # random W_q / W_k: p ≈ 0.5 everywhere
    d = stage.router.w_q.shape[0]
    stage.router.w_q[...] = jax.random.normal(jax.random.key(stage.index), (d, d))
    stage.router.w_k[...] = jax.random.normal(jax.random.key(stage.index + 7), (d, d))
    stage = stage.inner
  return model


@pytest.mark.parametrize("family,train", ISOLATION_CASES)
def test_changing_one_document_leaves_the_others_unchanged(family, train):
  model = _overflowing_model(family)
  tokens, seg = _four_documents()
  logits, aux = forward(model, jnp.asarray(tokens), jnp.asarray(seg), train)
  if family in LEARNED_COSINE or (family == "mrt5" and not train):
    assert float(aux["metrics"]["stage0/overflow_frac"]) > 0.3, "the test needs heavy overflow"
  assert all(float(v) == 0 for k, v in aux["metrics"].items() if k.endswith("row_overflow_frac"))
  rng = np.random.default_rng(1)
  for d in range(1, 5):
    changed = tokens.copy()
    changed[seg == d] = rng.integers(0, 256, size=int((seg == d).sum()))
    logits2, _ = forward(model, jnp.asarray(changed), jnp.asarray(seg), train)
    others = (seg != d) & (seg > 0)
    np.testing.assert_allclose(np.asarray(logits2)[others], np.asarray(logits)[others], atol=1e-5, rtol=0,
                               err_msg=f"{family}: changing document {d} moved the others")
    assert not np.allclose(np.asarray(logits2)[seg == d], np.asarray(logits)[seg == d])


@pytest.mark.parametrize("family,train", ISOLATION_CASES)
def test_a_packed_document_scores_as_it_would_alone(family, train):
  """Logits of each document packed with three others equal those of the document alone in a row."""
  model = _overflowing_model(family)
  tokens, seg = _four_documents()
  logits, _ = forward(model, jnp.asarray(tokens), jnp.asarray(seg), train)
  B, L = seg.shape
  alone_tokens, alone_seg, where = np.zeros((8, L), np.int32), np.zeros((8, L), np.int32), []
  for b in range(B):
    for d in range(1, 5):
      idx = np.flatnonzero(seg[b] == d)
      k = len(where)
      alone_tokens[k, :len(idx)], alone_seg[k, :len(idx)] = tokens[b, idx], 1
      where.append((b, idx))
  alone, _ = forward(model, jnp.asarray(alone_tokens), jnp.asarray(alone_seg), train)
  for k, (b, idx) in enumerate(where):
    np.testing.assert_allclose(np.asarray(alone)[k, :len(idx)], np.asarray(logits)[b, idx], atol=1e-5,
                               rtol=0, err_msg=f"{family}: document {k} differs packed and alone")


def test_unrolled_layers_equal_the_scanned_stack():
  """`model.scan_layers=False` (the loop-free program bench.step_overhead costs) computes the same loss and
  gradients as the scanned stack, with remat, for Mamba2 and attention + MLP groups of several layers."""
  tokens, seg = packed_batch(2, 64, seed=3)
  results = []
  for scan in (True, False):
    model = tiny_model("hnet_1stage", scan_layers=scan, remat="full", layout="['m2', ['T3'], 'm2']")
    graphdef, params = nnx.split(model)

    def loss(p, graphdef=graphdef):
      logits, aux = nnx.merge(graphdef, p)(tokens, seg, train=True)
      return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, tokens)) + sum(aux["router_losses"])

    lowered = jax.jit(jax.value_and_grad(loss)).lower(params)
    assert ("stablehlo.while" in lowered.as_text()) == scan
    results.append(lowered.compile()(params))
  (l_scan, g_scan), (l_unrolled, g_unrolled) = results
  np.testing.assert_allclose(l_unrolled, l_scan, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g_unrolled), jax.tree.leaves(g_scan)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
