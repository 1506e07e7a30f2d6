"""Fixed-stride chunks every 4 bytes (MEGABYTE style), CPU-small."""
from configs import base


def get_config(arg=None):
  c = base.get_config()
  c.model.layout = "['m1', ['T2'], 'm1']"
  c.model.d_model = (128, 192)
  c.model.d_ff = (0, 512)
  c.model.num_heads = (4, 4)
  c.model.router = "stride"
  c.model.target_ratio = (4.0,)  # stride K = round(N)
  if arg:
    base.apply_variant(c, arg)
  return c
