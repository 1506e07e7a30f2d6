"""Layout parsing, config validation and the paper-size parameter counts."""
import pytest
from flax import nnx

from hnet.config import LayerGroup, model_config_from_dict, parse_layout
from hnet.model import routers
from hnet.model.lm import HNetLM, count_params
from tests.helpers import FAMILIES, load_config


def test_parse_layout_orders_encoders_main_decoders():
  groups = parse_layout("['m4', ['T1m4', ['T26'], 'm4T1'], 'm4']")
  assert groups == [(LayerGroup("m", 4),), (LayerGroup("T", 1), LayerGroup("m", 4)), (LayerGroup("T", 26),),
                    (LayerGroup("m", 4), LayerGroup("T", 1)), (LayerGroup("m", 4),)]
  assert parse_layout(["T2m1m1"]) == [(LayerGroup("T", 2), LayerGroup("m", 2))]


@pytest.mark.parametrize("layout,message", [
    ("['m4', ['T2']]", "a stage is"),
    ("['x4']", "malformed layer string"),
    ("['m4', ['T2'], 'm']", "malformed layer string"),
    ("['T0']", "must be positive"),
    ("[m4, T2", "cannot parse"),
    ("['m4', 'T2', 'm4']", "expected a list"),
    ("['']", "non-empty"),
])
def test_malformed_layouts_give_clear_errors(layout, message):
  with pytest.raises(ValueError, match=message):
    parse_layout(layout)


@pytest.mark.parametrize("key,value,message", [
    ("d_model", (128,), "has 1 entries but the layout has 2"),
    ("num_heads", (3, 4), "not divisible"),
    ("target_ratio", (1.0,), "must be > 1"),
    ("d_model", (256, 128), "must not shrink"),
    ("dtype", "int8", "model.dtype"),
])
def test_bad_model_values_name_the_key(key, value, message):
  c = load_config("hnet_1stage")
  setattr(c.model, key, value)
  with pytest.raises(ValueError, match=message):
    model_config_from_dict(c.model)


@pytest.mark.parametrize("family,key,value,message", [
    ("hnet_1stage", "router", "magic", "unknown router 'magic'; choose one of .*'cosine'"),
    ("hnet_2stage", "router", "whitespace", "reads the bytes: only one outer stage"),
    ("hnet_2stage", "router", "delete_gate", "attention-only main network"),
    ("blt", "entropy_model", "", "needs model.entropy_model"),
])
def test_the_router_checks_what_it_needs(family, key, value, message):
  """Router-specific checks belong to the router classes and run before the model is built."""
  c = load_config(family)
  setattr(c.model, key, value)
  cfg = model_config_from_dict(c.model)
  with pytest.raises(ValueError, match=message):
    routers.check(cfg)
  with pytest.raises(ValueError, match=message):
    nnx.eval_shape(lambda: HNetLM(cfg, rngs=nnx.Rngs(params=0)))


def test_router_and_layout_must_agree():
  c = load_config("flat")
  c.model.router = "cosine"
  c.model.target_ratio = ()
  with pytest.raises(ValueError, match="needs a hierarchical layout"):
    model_config_from_dict(c.model)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_config_builds(family):
  for variant in ("", "tiny"):
    cfg = model_config_from_dict(load_config(family, variant).model)
    assert cfg.num_stages == {"flat": 1, "hnet_2stage": 3}.get(family, 2)


def _expected_params(cfg) -> int:
  """Hand count from the architecture (algorithms.md §1-2), independent of the module code."""
  total = 2 * cfg.vocab_size * cfg.stages[0].d_model  # embedding + untied LM head
  n_state = cfg.ssm_d_state
  for s, st in enumerate(cfg.stages):
    d, f = st.d_model, st.d_ff
    di = cfg.ssm_expand * d
    heads = di // cfg.ssm_head_dim
    mamba = d * (2 * di + 2 * n_state + heads) + (di + 2 * n_state) * (cfg.ssm_d_conv + 1) + 3 * heads + di + di * d
    attention = 4 * d * d
    mlp = 3 * d * f
    for g in st.encoder + st.main + st.decoder:
      per_layer = (mamba if g.mixer == "mamba" else attention) + d  # + pre-norm
      per_layer += (mlp + d) if g.has_mlp else 0
      total += g.count * per_layer
    stacks = 1 if st.is_innermost else 2
    total += stacks * d  # final norm of each stack
    if s:
      total += d - cfg.stages[s - 1].d_model  # pad_dimension
    if not st.is_innermost:
      total += 2 * d * d + d * d + d  # W_q, W_k, residual projection + bias
  return total


# Golden counts (vocab 256, untied): update only when the architecture deliberately changes.
@pytest.mark.parametrize("name,golden", [
    ("hnet_1stage_L", 679_405_312),
    ("hnet_1stage_XL", 1_270_833_920),
    ("hnet_2stage_L", 874_315_264),
    ("hnet_2stage_XL", 1_603_492_224),
])
def test_paper_size_parameter_counts(name, golden):
  cfg = model_config_from_dict(load_config(name, "").model)
  abstract = nnx.eval_shape(lambda: HNetLM(cfg, rngs=nnx.Rngs(params=0)))
  n = count_params(abstract)
  assert n == _expected_params(cfg)
  assert n == golden, f"{name}: {n:,} parameters"


def test_tiny_variant_and_unknown_variant():
  c = load_config("hnet_1stage_XL", "tiny")
  assert c.model.d_model == (32, 48) and c.data.seq_len == 64
  with pytest.raises(ValueError, match="unknown config variant"):
    load_config("flat", "huge")
