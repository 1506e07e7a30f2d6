"""MrT5-style delete gate in a causal hierarchy (CPU-small): soft deletion in training, hard at inference."""
from hnet.configs import base


def get_config(arg=None):
  c = base.get_config()
  c.model.layout = "['T1', ['T2'], 'T1']"
  c.model.d_model = (128, 192)
  c.model.d_ff = (384, 512)
  c.model.num_heads = (4, 4)
  c.model.router = "delete_gate"
  c.model.target_ratio = (2.0,)  # keep 1/N of the positions: target deletion rate 1 - 1/N
  if arg:
    base.apply_variant(c, arg)
  return c
