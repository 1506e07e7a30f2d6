"""BLT-style entropy patching (CPU-small): a chunk starts where a frozen byte LM is unsure of the next byte.

    python train.py --config configs/entropy_lm.py --workdir runs/entropy
    python train.py --config configs/blt.py --config.model.entropy_model=runs/entropy --workdir runs/blt

The hierarchy is the `default` family's (local-attention encoder/decoder, Transformer on
patches); only the router differs. θ is stated here explicitly: `python -m hnet.calibrate_entropy`
measured it on the training data for the entropy LM of configs/entropy_lm.py (seed 0) and
target_ratio bytes per patch; recalibrate for another entropy model or target.
"""
from hnet.configs import base


def get_config(arg=None):
  c = base.get_config()
  c.model.layout = "['t1', ['T2'], 't1']"
  c.model.d_model = (128, 192)
  c.model.d_ff = (0, 512)
  c.model.num_heads = (4, 4)
  c.model.window = (15, -1)
  c.model.router = "entropy"
  c.model.entropy_rule = "global"
  c.model.entropy_threshold = 2.6671  # nats; calibrated for 4 bytes per patch (see the docstring)
  c.model.target_ratio = (4.0,)  # bytes per patch θ was calibrated for; sizes the chunk budgets
  c.model.remat = "none"
  c.data.seq_len = 256
  c.train.batch_size = 8
  c.train.num_steps = 4300
  c.train.log_every = 50
  c.train.eval_every = 1000
  c.train.eval_batches = 32
  c.ckpt.every = 1000
  c.opt.lr = 5e-3
  c.opt.lr_multipliers = (2.0, 1.0)
  c.opt.warmup_steps = 100
  c.opt.decay_fraction = 0.5
  if arg:
    base.apply_variant(c, arg)
  return c
