"""Fixed stride (MEGABYTE style): a chunk starts every K positions of each document."""
# pylint: disable=invalid-name
from flax import nnx

from hnet.routers.base import RouterOutput, rule_output


class StrideRouter(nnx.Module):

  def __init__(self, *, stride: int):
    if stride < 1:
      raise ValueError(f"stride router: stride (round(target_ratio)) must be >= 1, got {stride}")
    self.stride = stride

  def __call__(self, x_BLD, *, tokens_BL, segment_ids_BL, positions_BL, train: bool) -> RouterOutput:
    del x_BLD, tokens_BL, train
    return rule_output(positions_BL % self.stride == 0, segment_ids_BL)
