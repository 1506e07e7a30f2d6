"""Optimiser pieces: decay mask, per-stage lr multipliers, schedules; loss pieces: masked CE, PI controller."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hnet.config import model_config_from_dict
from hnet.model.loss import ControllerState, next_byte_nll, update_controller
from hnet.train.optim import (decay_mask, hnet_lr_multipliers, learning_rate_schedule, lr_multiplier_tree, path_names,
                        stage_lr_multipliers)
from tests.helpers import load_config, tiny_model


def _flat(tree):
  return {"/".join(path_names(p)): v for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def test_decay_mask_and_stage_multipliers():
  params = nnx.state(tiny_model("hnet_2stage"), nnx.Param)
  decay = _flat(decay_mask(params))
  mult = _flat(lr_multiplier_tree(params, (3.0, 1.7, 0.9)))
  assert decay["backbone/residual_proj/kernel"] and decay["backbone/inner/router/w_q"]
  for name, d in decay.items():
    if name.endswith(("A_log", "/D", "dt_bias", "embedding", "weight", "bias")) and "conv_weight" not in name:
      assert not d, name
  assert mult["embed/embedding"] == 3.0 and mult["lm_head/kernel"] == 3.0
  assert mult["backbone/router/w_q"] == 3.0
  assert mult["backbone/inner/encoder/norm/weight"] == 1.7
  assert all(v == 0.9 for k, v in mult.items() if "inner/inner/main" in k)
  slow_router = _flat(lr_multiplier_tree(params, (3.0, 1.7, 0.9), router_multiplier=0.1))
  assert slow_router["backbone/router/w_q"] == pytest.approx(0.3)
  assert slow_router["backbone/inner/router/w_k"] == pytest.approx(0.17)
  assert all(slow_router[k] == v for k, v in mult.items() if "router" not in k)


def test_hnet_lr_rule_and_its_config_checks():
  """λ^s = sqrt(N_GPT · share of positions · D^S / D^s): 2stage_XL widths (1024, 1536, 2048), N = (3, 3)."""
  c = load_config("hnet_2stage_XL", "")
  cfg = model_config_from_dict(c.model)
  assert c.opt.lr_multiplier_rule == "hnet"
  want = (math.sqrt(4.6 * 2048 / 1024), math.sqrt(4.6 / 3 * 2048 / 1536), math.sqrt(4.6 / 9))
  np.testing.assert_allclose(stage_lr_multipliers(c.opt, cfg), want, rtol=1e-12)
  np.testing.assert_allclose(hnet_lr_multipliers(cfg, 9.0)[-1], 1.0)  # N_GPT = ∏ N: main network at lr
  c.opt.lr_multipliers = (1.0, 1.0, 1.0)
  with pytest.raises(ValueError, match="both set the multipliers"):
    stage_lr_multipliers(c.opt, cfg)
  c.opt.lr_multiplier_rule = "none"
  assert stage_lr_multipliers(c.opt, cfg) == (1.0, 1.0, 1.0)
  c.opt.lr_multipliers = (1.0, 2.0)
  with pytest.raises(ValueError, match="lr_multipliers has 2 entries"):
    stage_lr_multipliers(c.opt, cfg)
  c.opt.lr_multipliers, c.opt.lr_multiplier_rule = (), "muP"
  with pytest.raises(ValueError, match="lr_multiplier_rule='muP'"):
    stage_lr_multipliers(c.opt, cfg)


def test_wsd_and_cosine_schedules():
  c = load_config("default", "").opt
  c.lr, c.warmup_steps, c.decay_fraction, c.min_lr_ratio = 1.0, 10, 0.2, 0.0
  wsd = learning_rate_schedule(c, 100)
  assert float(wsd(5)) == pytest.approx(0.5) and float(wsd(50)) == pytest.approx(1.0)
  assert float(wsd(79)) == pytest.approx(1.0) and float(wsd(90)) == pytest.approx(0.5) and float(wsd(100)) < 1e-6
  c.schedule = "cosine"
  cos = learning_rate_schedule(c, 100)
  assert float(cos(10)) == pytest.approx(1.0) and float(cos(55)) == pytest.approx(0.5, abs=0.01)
  c.schedule = "linear"
  with pytest.raises(ValueError, match="opt.schedule"):
    learning_rate_schedule(c, 100)


def test_next_byte_nll_is_masked_and_exact():
  logits = jnp.log(jnp.asarray([[[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]]])).astype(jnp.bfloat16)
  nll_BL = next_byte_nll(logits, jnp.asarray([[0, 1, 1]]), jnp.asarray([[True, True, False]]))
  assert nll_BL.dtype == jnp.float32 and float(nll_BL[0, 2]) == 0.0
  assert float(nll_BL.sum()) == pytest.approx(math.log(2) + math.log(10), rel=1e-2)  # bf16 logits


def test_pi_controller_raises_the_weight_until_the_target_rate():
  state = ControllerState.init()
  for _ in range(5):
    state = update_controller(state, jnp.float32(0.1), target=0.5, kp=0.5, ki=1e-2)
  assert float(state.alpha) > 0
  np.testing.assert_allclose(float(state.i), 5 * 1e-2 * 0.4, rtol=1e-6)
  over = update_controller(ControllerState.init(), jnp.float32(0.9), target=0.5, kp=0.5, ki=1e-2)
  assert float(over.alpha) == 0.0  # never negative
  # Two-sided (our deviation): deleting too much makes the weight negative, the regulariser rewards keeping.
  back = update_controller(ControllerState.init(), jnp.float32(0.9), target=0.5, kp=0.5, ki=1e-2, two_sided=True)
  np.testing.assert_allclose(float(back.alpha), 0.1 * 0.5 * -0.4 + 1e-2 * -0.4, rtol=1e-6)


def test_the_official_decay_grouping_exempts_only_biases_and_norm_modules():
  """goombalab/hnet's group_params: no decay where the name ends in `.bias` or sits in a `norm` module."""
  params = nnx.state(tiny_model("hnet_2stage"), nnx.Param)
  ours, official = _flat(decay_mask(params)), _flat(decay_mask(params, "hnet"))
  exempt = {name for name, d in official.items() if not d}
  assert exempt and all(name.endswith(("bias", "norm_weight")) for name in exempt), exempt
  for name in ("embed/embedding", "backbone/inner/pad_dimension", "backbone/encoder/norm/weight"):
    assert official[name] and not ours[name], name
  assert any(k.endswith("A_log") and official[k] and not ours[k] for k in official)
  with pytest.raises(ValueError, match="opt.decay_rule"):
    decay_mask(params, "paper")
