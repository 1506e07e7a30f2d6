"""A router is one class behind `hnet.model.routers.Router`: this file adds one without touching hnet/.

The toy router starts a chunk where a learned linear score of the encoder output is positive; its
auxiliary loss (the mean start probability) is weighted like H-Net's ratio loss. The model,
generation, FLOP counts and the trainer all work with it through the interface only.
"""
# pylint: disable=invalid-name
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hnet.config import model_config_from_dict
from hnet.model import routers
from hnet.model.chunking import document_starts
from hnet.model.flops import flops_breakdown
from hnet.model.generate import step_logits
from hnet.model.lm import HNetLM
from hnet.model.routers.base import RouterOutput, valid_mean
from hnet.train import trainer
from tests.helpers import load_config


@routers.register("toy_linear")
class ToyLinearRouter(routers.Router):
  """p_t = sigmoid(w . x_t + b); a chunk starts where p_t > 0.5 (and at document starts)."""

  def __init__(self, d_model: int, *, rngs: nnx.Rngs):
    self.w = nnx.Param(jax.random.normal(rngs.params(), (d_model,), jnp.float32) / d_model**0.5)
    self.b = nnx.Param(jnp.zeros((), jnp.float32))

  @classmethod
  def build(cls, cfg, st, *, rngs):
    return cls(st.d_model, rngs=rngs)

  @classmethod
  def loss_weight(cls, ratio_loss_weight, controller):
    return jnp.float32(ratio_loss_weight)

  @classmethod
  def flops_per_position(cls, cfg, st):
    return 2 * st.d_model

  def probability(self, x_BLD):
    return jax.nn.sigmoid(x_BLD.astype(jnp.float32) @ self.w[...] + self.b[...])

  def __call__(self, x_BLD, *, tokens_BL, segment_ids_BL, positions_BL, train):
    valid_BL = segment_ids_BL > 0
    p_BL = jnp.where(document_starts(segment_ids_BL), 1.0, self.probability(x_BLD))
    mean_p = valid_mean(p_BL, valid_BL)
    return RouterOutput((p_BL > 0.5) & valid_BL, p_BL, mean_p, {"toy_prob_mean": mean_p})

  def decode(self, h_BD, token_B, position_B, state, active_B, lm):
    p_B = jnp.where(position_B == 0, 1.0, self.probability(h_BD))
    return p_B > 0.5, p_B, state


def _config(data_dir: str):
  c = load_config("hnet_1stage")
  c.model.router = "toy_linear"
  c.data.data_dir = data_dir
  c.train.num_steps, c.train.batch_size, c.train.log_every = 2, 8, 1
  c.train.eval_every, c.train.eval_batches, c.train.full_final_eval = 2, 1, False
  c.ckpt.async_save = False
  return c


def test_unregistered_names_list_the_registered_ones():
  with pytest.raises(ValueError, match="unknown router 'toy_linaer'; choose one of .*'toy_linear'"):
    routers.router_class("toy_linaer")


def test_a_router_registered_here_runs_forward_decoding_and_flops(tmp_path):
  cfg = model_config_from_dict(_config(str(tmp_path)).model)
  model = HNetLM(cfg, rngs=nnx.Rngs(params=0))
  assert isinstance(model.backbone.router, ToyLinearRouter)
  tokens_BL = jnp.asarray(np.random.default_rng(0).integers(32, 127, (2, 48)), jnp.int32)
  logits_BLV, aux = model(tokens_BL)
  assert "stage0/toy_prob_mean" in aux["metrics"]
  stepped_BLV = step_logits(model, tokens_BL)  # cached decoding asks the router's `decode`
  np.testing.assert_allclose(np.asarray(stepped_BLV), np.asarray(logits_BLV), atol=1e-4, rtol=1e-4)
  assert flops_breakdown(cfg, 48)["stage0/router"] == 2 * cfg.stages[0].d_model


def test_a_router_registered_here_trains_for_two_steps(tmp_path):
  c = _config(str(tmp_path / "tfds"))
  workdir = str(tmp_path / "run")
  out = trainer.train_and_evaluate(c, workdir, progress=False)
  assert out["step"] == 2 and np.isfinite(out["eval"]["bits_per_byte"])
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8")]
  train_rows = [r for r in rows if "train/loss" in r]
  assert [r["step"] for r in train_rows] == [1, 2]
  # The auxiliary loss enters the objective (weighted like the ratio loss) and is logged per stage.
  assert all(r["train/stage0/router_loss"] > 0 and "train/stage0/toy_prob_mean" in r for r in train_rows)
  assert all(r["train/loss"] > r["train/bits_per_byte"] * np.log(2) for r in train_rows)
