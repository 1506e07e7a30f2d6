"""The default `python train.py`: a small H-Net tuned for learning per second on a 2-core CPU.

H-Net dynamic chunking (cosine router, smoothing, ratio loss toward 4 bytes per chunk)
with single local-attention encoder/decoder layers (window 16) at width 128 and a
two-layer Transformer on chunks at width 192. On CPU, local attention is cheaper per
byte than Mamba2's chunked scan at this size; `configs/hnet_1stage.py` is the same model
with the paper's Mamba2 encoder/decoder.
"""
from hnet.configs import base


def get_config(arg=None):
  c = base.get_config()
  c.model.layout = "['t1', ['T2'], 't1']"
  c.model.d_model = (128, 192)
  c.model.d_ff = (0, 512)
  c.model.num_heads = (4, 4)
  c.model.window = (15, -1)
  c.model.router = "cosine"
  c.model.target_ratio = (4.0,)
  c.model.remat = "none"  # CPU memory is plentiful; recomputation would cost a third more time
  c.data.seq_len = 256
  c.train.batch_size = 8  # small models here learn more per byte from more, smaller steps
  c.train.num_steps = 4300  # ~500 s on 2 CPU cores, final full-split eval included (docs/training.md)
  c.train.log_every = 50
  c.train.eval_every = 1000
  c.train.eval_batches = 32
  c.ckpt.every = 1000
  c.opt.lr = 5e-3
  c.opt.lr_multipliers = (2.0, 1.0)  # tuned; H-Net's rule (opt.lr_multiplier_rule='hnet') gives (2.63, 1.07)
  c.opt.warmup_steps = 100
  c.opt.decay_fraction = 0.5  # a long cool-down pays off in a run this short
  if arg:
    base.apply_variant(c, arg)
  return c
