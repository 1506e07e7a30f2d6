"""H-Net, one stage of dynamic chunking (CPU-small): Mamba2 encoder/decoder, Transformer on chunks.

Sized for the study (experiments/study.py); `configs/default.py` is this architecture tuned for `python train.py`.
"""
from hnet.configs import base


def get_config(arg=None):
  c = base.get_config()
  c.model.layout = "['m1', ['T2'], 'm1']"
  c.model.d_model = (128, 192)
  c.model.d_ff = (0, 512)
  c.model.num_heads = (4, 4)
  c.model.router = "cosine"
  c.model.target_ratio = (4.0,)
  if arg:
    base.apply_variant(c, arg)
  return c
