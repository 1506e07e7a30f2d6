"""H-Net 2stage XL at the paper's size (algorithms.md §1.6). For accelerators: bf16, 8192-byte rows."""
from hnet.configs import base, hnet_2stage_L


def get_config(arg=None):
  c = hnet_2stage_L.get_config()
  c.model.layout = "['m4', ['T1m4', ['T27'], 'm4T1'], 'm4']"
  c.model.d_model = (1024, 1536, 2048)
  c.model.d_ff = (0, 4096, 5504)
  c.model.rotary_dim = (32, 48, 64)
  if arg:
    base.apply_variant(c, arg)
  return c
