"""bench.step_overhead: H-Net's step overhead in XLA's TPU cost model, on tiny configs (v5p topology, libtpu)."""
import importlib.util

import pytest

from bench import step_overhead
from hnet.configs import flat, hnet_1stage, hnet_2stage

pytestmark = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                reason="TPU targets need libtpu: pip install -e '.[test]' brings it")


def _tiny(module, layout):
  c = module.get_config("tiny")
  c.model.layout = layout
  c.model.dtype = "bfloat16"
  c.data.seq_len = 128  # a multiple of 128: attention at the byte level runs the splash kernels
  return step_overhead.for_cost_model(c, batch=2)


@pytest.fixture(scope="module")
def device():
  return step_overhead.chip()


def test_layouts_are_cut_to_one_layer_per_group_and_scaled_back():
  c = _tiny(hnet_2stage, "['m3', ['T1m2', ['T4'], 'm2T1'], 'm3']")
  assert step_overhead.reduced(c).model.layout == "['m1', ['T1m1', ['T1'], 'm1T1'], 'm1']"
  counts = step_overhead.layer_counts(step_overhead.model_config_from_dict(c.model))
  assert counts == {(0, "mamba2"): 6, (1, "attention"): 2, (1, "mlp"): 2, (1, "mamba2"): 4, (2, "attention"): 4,
                    (2, "mlp"): 4}
  assert step_overhead.scope_of("jit(train_step)/transpose(jvp(stage0))/dechunk/mul") == (0, "dechunk")
  assert step_overhead.scope_of("checkpoint/mamba2_stage1/ssd/dot_general") == (1, "mamba2")
  assert step_overhead.scope_of("jit(train_step)/optimizer/add") == (None, "optimizer")


def test_flat_step_prices_the_attention_kernels(device):
  row = step_overhead.measure_step(_tiny(flat, "['T3']"), device, efficiency=0.5)
  assert not row["has_loops"]  # unrolled: XLA's optimal_seconds is valid
  assert row["splash_calls"] == {"fwd": 2, "bwd": 1, "other": 0}  # one layer compiled; remat reruns the forward
  assert row["components"]["stage0/attention"]["layers"] == 3 and row["attention_kernel_s"] > 0
  assert row["est_s"] == pytest.approx(row["xla_s"] + row["attention_kernel_s"])
  assert 0 < row["model_pct_peak"] < 100


def test_hnet_step_has_every_component_and_no_unpriced_time(device):
  row = step_overhead.measure_step(_tiny(hnet_1stage, "['m2', ['T2'], 'm2']"), device, efficiency=0.5)
  parts = row["components"]
  for name in ("stage0/mamba2", "stage0/router", "stage0/chunk_gather", "stage0/dechunk", "stage0/residual_proj",
               "stage1/attention", "stage1/mlp", "optimizer", "lm_head", "loss"):
    assert parts[name]["s"] > 0, name
  assert parts["stage0/mamba2"]["layers"] == 4 and parts["stage1/mlp"]["layers"] == 2
  assert row["unpriced_ops"] > 0  # the chunk bookkeeping's scatters are SparseCore offloads, taken out of the sum
  assert row["xla_s"] == pytest.approx(sum(p["s"] for p in parts.values()))
  assert 0 < row["xla_s"] < 0.01  # a tiny step: the -1 s per offload is gone
