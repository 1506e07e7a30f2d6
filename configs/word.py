"""Word-boundary chunks (SpaceByte / HAT style), CPU-small."""
from configs import base


def get_config(arg=None):
  c = base.get_config()
  c.model.layout = "['m1', ['T2'], 'm1']"
  c.model.d_model = (128, 192)
  c.model.d_ff = (0, 512)
  c.model.num_heads = (4, 4)
  c.model.router = "whitespace"
  c.model.target_ratio = (4.0,)  # only sizes the chunk capacity
  c.model.capacity_slack = 2.0  # word lengths vary more than learned chunks
  if arg:
    base.apply_variant(c, arg)
  return c
