"""Parameter counts and forward FLOPs/byte of every shipped config (abstract init: no memory used).

  python -m bench.param_counts
"""
import importlib

from flax import nnx

from hnet.config import model_config_from_dict
from hnet.flops import flops_per_byte
from hnet.model import HNetLM, count_params

CONFIGS = ("default", "flat", "hnet_1stage", "hnet_2stage", "mrt5", "word", "stride",
           "hnet_1stage_L", "hnet_1stage_XL", "hnet_2stage_L", "hnet_2stage_XL")


def main():
  print("| config | layout | params | seq len | forward MFLOP/byte |")
  print("|---|---|---:|---:|---:|")
  for name in CONFIGS:
    c = importlib.import_module(f"configs.{name}").get_config()
    cfg = model_config_from_dict(c.model)
    n = count_params(nnx.eval_shape(lambda: HNetLM(cfg, rngs=nnx.Rngs(params=0))))  # pylint: disable=cell-var-from-loop
    fpb = flops_per_byte(cfg, c.data.seq_len)
    print(f"| {name} | `{c.model.layout}` | {n:,} | {c.data.seq_len} | {fpb / 1e6:.2f} |")


if __name__ == "__main__":
  main()
