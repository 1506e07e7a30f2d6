"""BLT-style entropy patching (CPU-small): a chunk starts where a frozen byte LM is unsure of the next byte.

    python train.py --config configs/entropy_lm.py --workdir runs/entropy
    python train.py --config configs/blt.py --config.model.entropy_model=runs/entropy --workdir runs/blt

The hierarchy and the run are the `hnet_attn` config's (local-attention encoder/decoder, Transformer
on patches); only the router differs. θ is stated here explicitly: `python -m hnet.tools.calibrate_entropy`
measured it on the training data for the entropy LM of configs/entropy_lm.py (seed 0) and
target_ratio bytes per patch; recalibrate for another entropy model or target.
"""
from hnet.configs import base, hnet_attn


def get_config(arg=None):
  c = hnet_attn.get_config()
  c.model.router = "entropy"
  c.model.entropy_rule = "global"
  c.model.entropy_threshold = 2.6671  # nats; calibrated for 4 bytes per patch (see the docstring)
  c.model.target_ratio = (4.0,)  # bytes per patch θ was calibrated for; sizes the chunk budgets
  if arg:
    base.apply_variant(c, arg)
  return c
