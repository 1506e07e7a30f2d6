"""Flat byte Transformer baseline (no hierarchy), CPU-small."""
from hnet.configs import base


def get_config(arg=None):
  c = base.get_config()
  c.model.layout = "['T2']"
  c.model.d_model = (128,)
  c.model.d_ff = (384,)
  c.model.num_heads = (4,)
  c.model.rotary_dim = (-1,)
  c.model.window = (-1,)
  c.model.router = "none"
  c.model.target_ratio = ()
  if arg:
    base.apply_variant(c, arg)
  return c
