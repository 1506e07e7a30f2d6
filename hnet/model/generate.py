"""Incremental decoding with per-stage caches, and batched sampling.

Every layer keeps a cache (attention: keys/values and a per-row length; Mamba2: conv
and SSM state). A stage steps its encoder on every byte, asks its router whether the
byte starts a chunk, steps its inner network only for the rows where it does, updates
the smoothing state, and steps its decoder. Rows of a batch advance their inner
networks independently (an `active_B` mask), so a batch can hold different boundary
patterns. The step function is exact: step-by-step logits equal the full forward pass
(tested), hard deletion for the delete gate.
"""
# pylint: disable=invalid-name
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from hnet import BOS_ID, EOS_ID
from hnet.layers.attention import with_null_key
from hnet.model import routers
from hnet.model.lm import HNetLM
from hnet.model.routers import ByteLMSteps
from hnet.model.stack import Block, Stack
from hnet.model.stage import Stage


class AttentionCache(NamedTuple):
  k_BSHK: jax.Array
  v_BSHK: jax.Array
  length_B: jax.Array  # keys written so far per row


class StageState(NamedTuple):
  """Decoding state of one stage (inner state nested)."""
  encoder: Any
  decoder: Any
  main: Any  # innermost stage only
  inner: Any  # StageState of the next stage (outer stages)
  position_B: jax.Array  # positions seen at this stage
  chunks_B: jax.Array  # chunks started (capacity check)
  last_value_BD: jax.Array  # last smoothed / inner output (dechunking)
  router: Any = None  # the router's own state (`Router.init_decode`); it keeps inactive rows itself


ROW_FIELDS = ("position_B", "chunks_B", "last_value_BD")


def _select_rows(active_B: jax.Array, new: "StageState", old: "StageState") -> "StageState":
  """Keeps the per-row fields of inactive rows (layer caches select themselves in `stack_step`)."""
  return new._replace(**{f: _select(active_B, getattr(new, f), getattr(old, f)) for f in ROW_FIELDS})


def _select(active_B: jax.Array, new, old):
  """Per-row choice between two pytrees with a leading batch axis."""
  def pick(n, o):
    mask = active_B.reshape((-1,) + (1,) * (n.ndim - 1))
    return jnp.where(mask, n, o)
  return jax.tree.map(pick, new, old)


# ---------------------------------------------------------------------------------------------
# Layers and stacks
# ---------------------------------------------------------------------------------------------
def _block_cache(block: Block, batch: int, max_len: int, dtype, window: int) -> Any:
  if block.is_mamba:
    return block.mixer.init_cache(batch)
  attn = block.mixer
  slots = max_len if window < 0 else min(max_len, window + 1)  # a sliding window keeps a ring of w + 1 keys
  shape = (batch, slots, attn.num_heads, attn.head_dim)
  return AttentionCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((batch,), jnp.int32))


def _attention_step(attn, x_BD, position_B, cache: AttentionCache, window: int):
  B = x_BD.shape[0]
  q_B1HK, k_B1HK, v_B1HK = attn.qkv(x_BD[:, None], position_B[:, None])
  rows = jnp.arange(B)
  S = cache.k_BSHK.shape[1]
  # Ring buffer: slot i % S holds key i; the S = w + 1 newest keys are exactly the window.
  # Softmax attention does not care about key order (RoPE was applied before caching).
  ring = 0 <= window == S - 1
  slot_B = cache.length_B % S if ring else cache.length_B
  k_BSHK = cache.k_BSHK.at[rows, slot_B].set(k_B1HK[:, 0].astype(cache.k_BSHK.dtype), mode="drop")
  v_BSHK = cache.v_BSHK.at[rows, slot_B].set(v_B1HK[:, 0].astype(cache.v_BSHK.dtype), mode="drop")
  key_S = jnp.arange(S)[None, :]
  allowed_BS = key_S <= cache.length_B[:, None]
  if window >= 0 and not ring:
    allowed_BS &= cache.length_B[:, None] - key_S <= window
  keys_BSHK, values_BSHK = k_BSHK.astype(q_B1HK.dtype), v_BSHK.astype(q_B1HK.dtype)
  mask_B11S = allowed_BS[:, None, None, :]
  if attn.softmax1:
    keys_BSHK, values_BSHK, mask_B11S, _ = with_null_key(keys_BSHK, values_BSHK, mask_B11S, None)
  out_B1HK = jax.nn.dot_product_attention(q_B1HK, keys_BSHK, values_BSHK, mask=mask_B11S)
  y_BD = attn.out_proj(out_B1HK.reshape(B, -1))
  return y_BD, AttentionCache(k_BSHK, v_BSHK, cache.length_B + 1)


def _block_step(block: Block, x_BD, position_B, cache, window: int):
  h_BD = block.norm1(x_BD)
  if block.is_mamba:
    h_BD, cache = block.mixer.step(h_BD, cache)
  else:
    h_BD, cache = _attention_step(block.mixer, h_BD, position_B, cache, window)
  x_BD = x_BD + h_BD.astype(jnp.float32)
  if block.mlp is not None:
    x_BD = x_BD + block.mlp(block.norm2(x_BD)[:, None])[:, 0].astype(jnp.float32)
  return x_BD, cache


def init_stack_cache(stack: Stack, batch: int, max_len: int, dtype) -> list:
  caches = []
  for group in stack.groups:
    count = jax.tree.leaves(nnx.state(group.blocks, nnx.Param))[0].shape[0]
    one = _block_cache(group.blocks, batch, max_len, dtype, stack.window)
    caches.append(jax.tree.map(lambda x, n=count: jnp.broadcast_to(x, (n, *x.shape)), one))
  return caches


def stack_step(stack: Stack, x_BD, position_B, caches: list, active_B):
  """One position through a stack; caches of inactive rows are left unchanged."""
  x_BD = x_BD.astype(jnp.float32)
  new_caches = []
  for group, cache in zip(stack.groups, caches):
    def body(x, block_and_cache):
      block, c = block_and_cache
      y, c_new = _block_step(block, x, position_B, c, stack.window)
      return y, _select(active_B, c_new, c)

    # Unrolled: a one-position step is tiny, so a loop's per-iteration overhead would dominate it.
    count = jax.tree.leaves(cache)[0].shape[0]
    x_BD, cache = jax.lax.scan(body, x_BD, (group.blocks, cache), unroll=min(count, 8))
    new_caches.append(cache)
  return stack.norm(x_BD), new_caches


# ---------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------
def init_stage_state(stage: Stage, batch: int, lengths: list[int], dtype, lm: ByteLMSteps) -> StageState:
  s = stage.index
  zeros_B = jnp.zeros((batch,), jnp.int32)
  if stage.is_innermost:
    return StageState(None, None, init_stack_cache(stage.main, batch, lengths[s], dtype), None,
                      zeros_B, zeros_B, jnp.zeros((batch, 0)))
  d = stage.residual_proj.in_features
  return StageState(
      encoder=init_stack_cache(stage.encoder, batch, lengths[s], dtype),
      decoder=init_stack_cache(stage.decoder, batch, lengths[s], dtype),
      main=None,
      inner=init_stage_state(stage.inner, batch, lengths, dtype, lm),
      position_B=zeros_B, chunks_B=zeros_B,
      last_value_BD=jnp.zeros((batch, d), jnp.float32),
      router=stage.router.init_decode(batch, d, lm))


def stage_step(stage: Stage, x_BD, token_B, st: StageState, active_B, budgets: list[int], lm: ByteLMSteps,
               rope_position_B=None):
  """Steps one position of every active row; returns (output_BD at the outer width, new state).

  `budgets[s]` is the chunk budget of stage s (the one document of a generated row);
  `rope_position_B` overrides the innermost stage's RoPE position (MrT5 keeps byte positions).
  """
  x_BD = stage.pad(x_BD[:, None])[:, 0]
  if stage.is_innermost:
    position_B = st.position_B if rope_position_B is None else rope_position_B
    y_BD, main = stack_step(stage.main, x_BD, position_B, st.main, active_B)
    new = st._replace(main=main, position_B=st.position_B + 1)
    return y_BD[:, : stage.d_outer], _select_rows(active_B, new, st)

  h_BD, encoder = stack_step(stage.encoder, x_BD, st.position_B, st.encoder, active_B)
  res_BD = stage.residual_proj(h_BD)
  boundary_B, p_B, router_state = stage.router.decode(h_BD, token_B, st.position_B, st.router, active_B, lm)
  boundary_B &= st.chunks_B < budgets[stage.index]
  inner_position_B = st.position_B if stage.router.keeps_positions else None
  z_BD, inner = stage_step(stage.inner, h_BD, token_B, st.inner, active_B & boundary_B, budgets, lm,
                           inner_position_B)
  z_BD = z_BD.astype(jnp.float32)
  if stage.router.smooths:
    rate_B = jnp.where(boundary_B, jnp.clip(p_B, 1e-4, 1 - 1e-4), 0.0)[:, None]
    value_BD = rate_B * z_BD + (1.0 - rate_B) * st.last_value_BD
  else:
    value_BD = jnp.where(boundary_B[:, None], z_BD, st.last_value_BD)
  y_BD, decoder = stack_step(stage.decoder, value_BD + res_BD, st.position_B, st.decoder, active_B)
  new = StageState(encoder, decoder, None, inner, st.position_B + 1, st.chunks_B + boundary_B.astype(jnp.int32),
                   value_BD, router_state)
  return y_BD[:, : stage.d_outer], _select_rows(active_B, new, st)


# ---------------------------------------------------------------------------------------------
# The language model
# ---------------------------------------------------------------------------------------------
class Decoder:
  """Cached next-byte logits for a model and a maximum length (static capacities)."""

  def __init__(self, model: HNetLM, max_len: int):
    self.model = model
    self.max_len = max_len
    self.lm_steps = byte_lm_steps(max_len, jnp.dtype(model.cfg.dtype))

  def init(self, batch: int) -> StageState:
    return self.lm_steps.init(self.model, batch)

  def step(self, token_B: jax.Array, state: StageState) -> tuple[jax.Array, StageState]:
    return self.lm_steps.step(self.model, token_B, state, jnp.ones(token_B.shape, bool))


def byte_lm_steps(max_len: int, dtype) -> ByteLMSteps:
  """Cached stepping of any HNetLM up to `max_len` bytes: the model's own, and routers' byte LMs (BLT)."""
  def init(lm: HNetLM, batch: int) -> StageState:
    return init_stage_state(lm.backbone, batch, routers.stage_lengths(lm.cfg, max_len), dtype, steps)

  def step(lm: HNetLM, token_B, state: StageState, active_B) -> tuple[jax.Array, StageState]:
    y_BD, state = stage_step(lm.backbone, lm.embed(token_B), token_B, state, active_B,
                             lm.cfg.document_budgets(max_len), steps)
    return lm.lm_head(y_BD).astype(jnp.float32), state

  steps = ByteLMSteps(init, step)
  return steps


def step_logits(model: HNetLM, tokens_BL: jax.Array) -> jax.Array:
  """Logits for every position computed one byte at a time with caches (== model(tokens_BL))."""
  decoder = Decoder(model, tokens_BL.shape[1])

  def body(state, token_B):
    logits_BV, state = decoder.step(token_B, state)
    return state, logits_BV

  _, logits_LBV = jax.lax.scan(body, decoder.init(tokens_BL.shape[0]), tokens_BL.T)
  return logits_LBV.transpose(1, 0, 2)


def sample_logits(key, logits_BV, temperature: float, top_k: int, top_p: float) -> jax.Array:
  """Temperature / top-k / top-p (nucleus) sampling; temperature 0 is greedy."""
  if temperature <= 0:
    return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
  logits_BV = logits_BV / temperature
  if top_k > 0:
    kth_B1 = jax.lax.top_k(logits_BV, top_k)[0][:, -1:]
    logits_BV = jnp.where(logits_BV < kth_B1, -jnp.inf, logits_BV)
  if top_p < 1.0:
    sorted_BV = jnp.sort(logits_BV, axis=-1)[:, ::-1]
    cum_BV = jnp.cumsum(jax.nn.softmax(sorted_BV, axis=-1), axis=-1)
    # Smallest set whose mass reaches top_p: keep logits >= the last one needed.
    cutoff_idx_B1 = jnp.sum(cum_BV < top_p, axis=-1, keepdims=True)
    cutoff_B1 = jnp.take_along_axis(sorted_BV, jnp.minimum(cutoff_idx_B1, sorted_BV.shape[-1] - 1), axis=-1)
    logits_BV = jnp.where(logits_BV < cutoff_B1, -jnp.inf, logits_BV)
  return jax.random.categorical(key, logits_BV, axis=-1).astype(jnp.int32)


def check_sampling(temperature: float, top_k: int, top_p: float, vocab_size: int) -> None:
  """Settings `sample_logits` reads as meant: a NaN or negative value would silently mean something else."""
  if not (math.isfinite(temperature) and temperature >= 0):
    raise ValueError(f"generate: temperature must be a finite number >= 0 (0 = greedy), got {temperature}")
  if not 0 <= top_k <= vocab_size:
    raise ValueError(f"generate: top_k must be in [0, {vocab_size}] (0 = all), got {top_k}")
  if not (math.isfinite(top_p) and 0 < top_p <= 1):
    raise ValueError(f"generate: top_p must be in (0, 1] (1 = off), got {top_p}")


def generate(model: HNetLM, prompts: list[bytes], *, max_new_bytes: int = 256, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, seed: int = 0, stop_at_eos: bool = True) -> list[bytes]:
  """Samples continuations of byte prompts (BOS is prepended), batched, one jitted scan.

  Each row reads its own prompt and starts sampling where it ends; a row stops at EOS.
  """
  if not prompts:
    raise ValueError("generate: no prompts given")
  if max_new_bytes < 1:
    raise ValueError(f"generate: max_new_bytes must be >= 1, got {max_new_bytes}")
  check_sampling(temperature, top_k, top_p, model.cfg.vocab_size)
  rows = [bytes([BOS_ID]) + p for p in prompts]
  prompt_len = max(len(r) for r in rows)
  total = prompt_len + max_new_bytes
  prompt_BT = jnp.asarray([list(r) + [0] * (total - len(r)) for r in rows], jnp.int32)
  lens_B = jnp.asarray([len(r) for r in rows], jnp.int32)
  graphdef, state = nnx.split(model)
  out = _generate_jit(graphdef, state, prompt_BT, lens_B, jax.random.key(seed), total, float(temperature),
                      int(top_k), float(top_p))
  out = jax.device_get(out)
  results = []
  for b, r in enumerate(rows):
    new = [int(t) for t in out[b, len(r):len(r) + max_new_bytes]]
    if stop_at_eos and EOS_ID in new:
      new = new[:new.index(EOS_ID)]
    results.append(bytes(new))
  return results


@jax.jit(static_argnums=(0, 5, 6, 7, 8))
def _generate_jit(graphdef, state, prompt_BT, lens_B, key, total, temperature, top_k, top_p):
  model = nnx.merge(graphdef, state)
  decoder = Decoder(model, total)
  B = prompt_BT.shape[0]

  def body(carry, t):
    dec_state, tokens_BT, key = carry
    token_B = tokens_BT[:, t]
    logits_BV, dec_state = decoder.step(token_B, dec_state)
    key, sub = jax.random.split(key)
    sampled_B = sample_logits(sub, logits_BV, temperature, top_k, top_p)
    write_B = (t + 1 >= lens_B) & (t + 1 < total)  # past the prompt: append the sample
    tokens_BT = tokens_BT.at[:, jnp.minimum(t + 1, total - 1)].set(
        jnp.where(write_B, sampled_B, tokens_BT[:, jnp.minimum(t + 1, total - 1)]))
    return (dec_state, tokens_BT, key), None

  (_, tokens_BT, _), _ = jax.lax.scan(body, (decoder.init(B), prompt_BT, key), jnp.arange(total - 1))
  return tokens_BT
