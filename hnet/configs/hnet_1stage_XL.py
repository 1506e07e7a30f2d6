"""H-Net 1stage XL at the paper's size (algorithms.md §1.6). For accelerators: bf16, 8192-byte rows."""
from hnet.configs import base, hnet_1stage_L


def get_config(arg=None):
  c = hnet_1stage_L.get_config()
  c.model.layout = "['m4', ['T24'], 'm4']"
  c.model.d_model = (1024, 2048)
  c.model.d_ff = (0, 5504)
  c.model.rotary_dim = (32, 64)
  if arg:
    base.apply_variant(c, arg)
  return c
