"""The byte LM whose next-byte entropy places BLT patches (router 'entropy', configs/blt.py).

A small flat byte Transformer trained on its own, as BLT trains its entropy model separately
(BLT's is 14 layers of width 768 with a 512-byte window; this one fits a CPU). Its quality sets
how well the entropies find the hard bytes; its cost is added to the BLT model's FLOPs/byte.
The model is configs/flat.py's; the run is shorter.
"""
from hnet.configs import base, flat


def get_config(arg=None):
  c = flat.get_config()
  c.model.remat = "none"
  c.train.batch_size = 8
  c.train.num_steps = 1500
  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.eval_batches = 16
  c.ckpt.every = 500
  c.opt.lr = 3e-3
  if arg:
    base.apply_variant(c, arg)
  return c
