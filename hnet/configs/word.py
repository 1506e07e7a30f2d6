"""Word-boundary chunks (SpaceByte / HAT style): the small H-Net with a fixed whitespace router."""
from hnet.configs import base, hnet_1stage


def get_config(arg=None):
  c = hnet_1stage.get_config()
  c.model.router = "whitespace"
  c.model.target_ratio = (4.0,)  # only sizes the chunk capacity
  c.model.capacity_slack = 2.0  # word lengths vary more than learned chunks
  if arg:
    base.apply_variant(c, arg)
  return c
