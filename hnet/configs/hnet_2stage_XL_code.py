"""H-Net 2stage XL code (goombalab/hnet configs/hnet_2stage_XL_code.json): 2stage XL with a T28 main network.

Trained by the authors on 46B tokens of Pile GitHub; convert its weights with
`python -m hnet.convert` (docs/convert.md). For accelerators: bf16, 8192-byte rows.
"""
from hnet.configs import base, hnet_2stage_XL


def get_config(arg=None):
  c = hnet_2stage_XL.get_config()
  c.model.layout = "['m4', ['T1m4', ['T28'], 'm4T1'], 'm4']"
  if arg:
    base.apply_variant(c, arg)
  return c
