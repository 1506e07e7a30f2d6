"""Word boundaries (SpaceByte / HAT style): a chunk starts at a non-spacelike byte after a spacelike one.

Spacelike = not an ASCII letter or digit and not a UTF-8 continuation byte (0x80-0xBF).
"""
# pylint: disable=invalid-name
import jax
import jax.numpy as jnp

from hnet.model.routers.base import Router, RouterOutput, register, rule_decision, rule_output


def spacelike(tokens_BL: jax.Array) -> jax.Array:
  t = tokens_BL
  letter_or_digit = ((t >= 48) & (t <= 57)) | ((t >= 65) & (t <= 90)) | ((t >= 97) & (t <= 122))
  continuation = (t >= 0x80) & (t <= 0xBF)
  return ~(letter_or_digit | continuation)


@register("whitespace")
class WhitespaceRouter(Router):
  reads_bytes = True

  def __call__(self, x_BLD, *, tokens_BL, segment_ids_BL, positions_BL, train: bool) -> RouterOutput:
    del x_BLD, positions_BL, train
    if tokens_BL is None:
      raise ValueError("the whitespace router needs byte tokens: it only works at the outermost stage")
    space_BL = spacelike(tokens_BL)
    prev_space_BL = jnp.pad(space_BL[:, :-1], ((0, 0), (1, 0)), constant_values=True)
    return rule_output(prev_space_BL & ~space_BL, segment_ids_BL)

  def init_decode(self, batch, d_model, lm):
    del d_model, lm
    return jnp.ones((batch,), bool)  # whether the previous byte was spacelike (a row starts after one)

  def decode(self, h_BD, token_B, position_B, state, active_B, lm):
    del h_BD, lm
    space_B = spacelike(token_B)
    boundary_B, prob_B = rule_decision((state | (position_B == 0)) & ~space_B, position_B)
    return boundary_B, prob_B, jnp.where(active_B, space_B, state)
