"""Fixed stride (MEGABYTE style): a chunk starts every K positions of each document."""
# pylint: disable=invalid-name
from flax import nnx

from hnet.config import ModelConfig, StageConfig
from hnet.model.routers.base import Router, RouterOutput, register, rule_decision, rule_output


@register("stride")
class StrideRouter(Router):

  def __init__(self, *, stride: int):
    if stride < 1:
      raise ValueError(f"stride router: stride (round(target_ratio)) must be >= 1, got {stride}")
    self.stride = stride

  @classmethod
  def build(cls, cfg: ModelConfig, st: StageConfig, *, rngs: nnx.Rngs) -> "StrideRouter":
    del cfg, rngs
    return cls(stride=round(st.target_ratio))

  def __call__(self, x_BLD, *, tokens_BL, segment_ids_BL, positions_BL, train: bool) -> RouterOutput:
    del x_BLD, tokens_BL, train
    return rule_output(positions_BL % self.stride == 0, segment_ids_BL)

  def decode(self, h_BD, token_B, position_B, state, active_B, lm):
    del h_BD, token_B, active_B, lm
    return (*rule_decision(position_B % self.stride == 0, position_B), state)
