"""Fixed-stride chunks every 4 bytes (MEGABYTE style): the small H-Net with a stride router."""
from hnet.configs import base, hnet_1stage


def get_config(arg=None):
  c = hnet_1stage.get_config()
  c.model.router = "stride"
  c.model.target_ratio = (4.0,)  # stride K = round(N)
  if arg:
    base.apply_variant(c, arg)
  return c
