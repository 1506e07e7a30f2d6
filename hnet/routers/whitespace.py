"""Word boundaries (SpaceByte / HAT style): a chunk starts at a non-spacelike byte after a spacelike one.

Spacelike = not an ASCII letter or digit and not a UTF-8 continuation byte (0x80-0xBF).
"""
# pylint: disable=invalid-name
import jax
import jax.numpy as jnp
from flax import nnx

from hnet.routers.base import RouterOutput, rule_output


def spacelike(tokens_BL: jax.Array) -> jax.Array:
  t = tokens_BL
  letter_or_digit = ((t >= 48) & (t <= 57)) | ((t >= 65) & (t <= 90)) | ((t >= 97) & (t <= 122))
  continuation = (t >= 0x80) & (t <= 0xBF)
  return ~(letter_or_digit | continuation)


class WhitespaceRouter(nnx.Module):

  def __call__(self, x_BLD, *, tokens_BL, segment_ids_BL, positions_BL, train: bool) -> RouterOutput:
    del x_BLD, positions_BL, train
    if tokens_BL is None:
      raise ValueError("the whitespace router needs byte tokens: it only works at the outermost stage")
    space_BL = spacelike(tokens_BL)
    prev_space_BL = jnp.pad(space_BL[:, :-1], ((0, 0), (1, 0)), constant_values=True)
    return rule_output(prev_space_BL & ~space_BL, segment_ids_BL)
