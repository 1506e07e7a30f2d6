"""Parameter counts and forward FLOPs/byte of every shipped config (abstract init: no memory used).

  python -m bench.param_counts

The H-Net paper configs are checked against the parameter counts of the official models
(goombalab/hnet configs/*.json, whose published weights `python -m hnet.convert` loads).
"""
import importlib

from flax import nnx

from hnet.config import model_config_from_dict
from hnet.model.flops import flops_per_byte
from hnet.model.lm import HNetLM, count_params

CONFIGS = ("default", "flat", "hnet_1stage", "hnet_2stage", "mrt5", "word", "stride",
           "hnet_1stage_L", "hnet_1stage_XL", "hnet_2stage_L", "hnet_2stage_XL", "hnet_2stage_XL_chinese",
           "hnet_2stage_XL_code")

# Parameters of the official models: the sum of their state dicts' tensor sizes, built from each
# configs/*.json with the official module definitions on the meta device (goombalab/hnet @ 3673fe1,
# state-spaces/mamba @ a6a1dae; tests/fixtures/hnet_official/make_fixture.py stores those shapes in
# official_configs.json.gz and tests/test_convert.py checks these numbers against them).
OFFICIAL_PARAMS = {
    "hnet_1stage_L": 679_405_312,
    "hnet_1stage_XL": 1_270_833_920,
    "hnet_2stage_L": 874_315_264,
    "hnet_2stage_XL": 1_603_492_224,
    "hnet_2stage_XL_chinese": 1_755_285_888,
    "hnet_2stage_XL_code": 1_654_090_112,
}


def main():
  print("| config | layout | params | official params | seq len | forward MFLOP/byte |")
  print("|---|---|---:|---:|---:|---:|")
  for name in CONFIGS:
    c = importlib.import_module(f"hnet.configs.{name}").get_config()
    cfg = model_config_from_dict(c.model)
    n = count_params(nnx.eval_shape(lambda: HNetLM(cfg, rngs=nnx.Rngs(params=0))))  # pylint: disable=cell-var-from-loop
    fpb = flops_per_byte(cfg, c.data.seq_len)
    official = OFFICIAL_PARAMS.get(name)
    ref = "–" if official is None else f"{official:,} {'(equal)' if official == n else '(DIFFERENT)'}"
    print(f"| {name} | `{c.model.layout}` | {n:,} | {ref} | {c.data.seq_len} | {fpb / 1e6:.2f} |")


if __name__ == "__main__":
  main()
