"""H-Net, two nested stages of dynamic chunking (CPU-small)."""
from hnet.configs import base


def get_config(arg=None):
  c = base.get_config()
  c.model.layout = "['m1', ['T1m1', ['T2'], 'm1T1'], 'm1']"
  c.model.d_model = (128, 160, 192)
  c.model.d_ff = (0, 384, 512)
  c.model.num_heads = (4, 4, 4)
  c.model.rotary_dim = (-1, -1, -1)
  c.model.window = (-1, -1, -1)
  c.model.router = "cosine"
  c.model.target_ratio = (2.0, 2.0)
  c.data.seq_len = 256
  if arg:
    base.apply_variant(c, arg)
  return c
