"""Parameter counts and forward FLOPs/byte of every shipped config (abstract init: no memory used).

  python -m bench.param_counts

Every config file in hnet/configs is listed (`config_names`: a module with `get_config`, but
`base`, the defaults the others start from). `blt` is counted with configs/entropy_lm.py's model as
its frozen entropy LM (its parameters and FLOPs included). The H-Net paper configs are checked
against the parameter counts of the official models (goombalab/hnet configs/*.json, whose
published weights `python -m hnet.convert` loads).
"""
import dataclasses
import importlib
import os

import ml_collections
from flax import nnx

from hnet import configs
from hnet.config import ModelConfig, model_config_from_dict
from hnet.model.flops import flops_per_byte
from hnet.model.lm import HNetLM, count_params

NOT_CONFIGS = ("base",)  # has get_config: the defaults every config file starts from
ENTROPY_LM = "entropy_lm"  # the byte LM a config with router 'entropy' is counted with

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


def config_names() -> list[str]:
  """Every config file of hnet/configs, by module name: derived from the folder, so none is missed."""
  folder = os.path.dirname(os.path.abspath(configs.__file__))
  names = sorted(f[:-3] for f in os.listdir(folder) if f.endswith(".py") and not f.startswith("_"))
  return [n for n in names
          if n not in NOT_CONFIGS and hasattr(importlib.import_module(f"hnet.configs.{n}"), "get_config")]


def model_config(name: str) -> tuple[ml_collections.ConfigDict, ModelConfig]:
  """(config, model config) of a config file; an entropy router gets configs/entropy_lm.py's model."""
  c = importlib.import_module(f"hnet.configs.{name}").get_config()
  cfg = model_config_from_dict(c.model)
  if cfg.router == "entropy" and cfg.entropy_lm is None:
    lm = importlib.import_module(f"hnet.configs.{ENTROPY_LM}").get_config()
    cfg = dataclasses.replace(cfg, entropy_lm=model_config_from_dict(lm.model), entropy_model=f"configs/{ENTROPY_LM}.py")
  return c, cfg


def main():
  print("| config | layout | params | official params | seq len | forward MFLOP/byte |")
  print("|---|---|---:|---:|---:|---:|")
  for name in config_names():
    c, cfg = model_config(name)
    n = count_params(nnx.eval_shape(lambda: HNetLM(cfg, rngs=nnx.Rngs(params=0))))  # pylint: disable=cell-var-from-loop
    fpb = flops_per_byte(cfg, c.data.seq_len)
    official = OFFICIAL_PARAMS.get(name)
    ref = "–" if official is None else f"{official:,} {'(equal)' if official == n else '(DIFFERENT)'}"
    print(f"| {name} | `{c.model.layout}` | {n:,} | {ref} | {c.data.seq_len} | {fpb / 1e6:.2f} |")


if __name__ == "__main__":
  main()
