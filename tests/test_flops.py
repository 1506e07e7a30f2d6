"""FLOPs per byte: hand count for the flat Transformer, scaling for hierarchical models."""
import pytest

from hnet.config import model_config_from_dict
from hnet.model.flops import flops_breakdown, flops_per_byte
from tests.helpers import load_config


def test_flat_transformer_matches_hand_count():
  c = load_config("flat", "")
  c.model.d_model, c.model.d_ff, c.model.layout = (128,), (384,), "['T2']"
  cfg = model_config_from_dict(c.model)
  d, f, layers, length = 128, 384, 2, 256
  per_layer = 2 * d * 3 * d + 2 * d * d + 2 * 2 * d * (length + 1) / 2 + 2 * d * 2 * f + 2 * f * d
  hand = layers * per_layer + 2 * d * 256
  assert flops_per_byte(cfg, length) == pytest.approx(hand, rel=1e-12)


def test_window_limits_attention_flops():
  c = load_config("flat", "")
  c.model.window = (15,)
  cfg = model_config_from_dict(c.model)
  breakdown = flops_breakdown(cfg, 1024)
  # 16 keys for almost every query: mean context (16*17/2 + (1024-16)*16) / 1024.
  want = 2 * 4 * 128 * (16 * 17 / 2 + (1024 - 16) * 16) / 1024
  assert breakdown["stage0/attn_scores"] == pytest.approx(want)


def test_inner_stage_costs_scale_with_capacity():
  c = load_config("hnet_1stage", "")
  cfg = model_config_from_dict(c.model)
  b = flops_breakdown(cfg, 1024)
  m = cfg.capacity(0, 1024)
  d, f = cfg.stages[1].d_model, cfg.stages[1].d_ff
  assert b["stage1/mlp"] == pytest.approx(2 * 6 * d * f * m / 1024)  # 2 'T' layers at M positions
  assert m == 384  # ceil(1024 / 4 * 1.5) rounded to 8


def test_delete_gate_soft_mode_runs_inner_at_full_length():
  cfg = model_config_from_dict(load_config("mrt5", "").model)
  assert flops_per_byte(cfg, 512, train=True) > flops_per_byte(cfg, 512)


def test_paper_L_at_target_ratio_matches_reference_count():
  """H-Net 1-stage L at N = 6: the GPU issue's reference counts 346 MFLOP/byte forward."""
  cfg = model_config_from_dict(load_config("hnet_1stage_L", "").model)
  target = flops_per_byte(cfg, 8192, basis="target")
  assert target == pytest.approx(346e6, rel=0.03)
  assert flops_per_byte(cfg, 8192) > target  # capacity padding (1.25 slack, 128 tile) costs extra
