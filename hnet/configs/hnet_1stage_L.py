"""H-Net 1stage L at the paper's size (algorithms.md §1.6). For accelerators: bf16, 8192-byte rows."""
from hnet.configs import base


def get_config(arg=None):
  c = base.get_config()
  base.paper_scale(c)
  c.model.layout = "['m4', ['T22'], 'm4']"
  c.model.d_model = (1024, 1536)
  c.model.d_ff = (0, 4096)
  c.model.num_heads = (16, 16)
  c.model.rotary_dim = (32, 48)
  c.model.window = (1023, -1)
  c.model.router = "cosine"
  c.model.target_ratio = (6.0,)
  if arg:
    base.apply_variant(c, arg)
  return c
