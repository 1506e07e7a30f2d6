"""Causal, document-masked attention through JAX's Pallas splash-attention kernel (TPU, Mosaic).

The kernel takes one row's (H, L, K) heads; it is vmapped over the batch and, under a mesh, run
inside `jax.shard_map` with the batch over data × fsdp and the heads over tensor (attention mixes
neither rows nor heads, so each device runs it on its own shard). The mask is the kernel's own:
`CausalMask`, or `LocalMask((window, 0))` for a sliding window, and-ed with `SegmentIds` for packed
documents (padding, segment 0, attends to padding, as in `hnet.layers.attention.attention_mask`).
Only blocks the mask touches are computed, so a short window costs O(L·window).

`unsupported` names the cases the kernel cannot express; callers run the XLA path there.
"""
# pylint: disable=invalid-name
import logging

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash_kernel
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as splash_mask
from jax.sharding import PartitionSpec as P

from hnet.sharding import BATCH_AXES

log = logging.getLogger(__name__)

# Query/key tiles, largest first: 512 is the usual TPU choice; the kernel needs key tiles that are
# multiples of its 128 lanes, so lengths that no tile divides fall back to XLA.
BLOCKS = (512, 256, 128)


def block_size(length: int) -> int:
  """The largest tile in `BLOCKS` dividing `length`, or 0 if none does."""
  return next((b for b in BLOCKS if length % b == 0), 0)


def unsupported(length: int, has_key_bias: bool) -> str | None:
  """Why splash cannot run this call (the caller then uses XLA), or None."""
  if has_key_bias:
    return "a per-key additive bias (MrT5's delete gate) is not a splash mask"
  if not block_size(length):
    return f"length {length} is not a multiple of {BLOCKS[-1]} (the kernel's smallest tile)"
  return None


_logged: set[str] = set()


def log_once(level: int, msg: str) -> None:
  """Logs `msg` the first time only: layers are traced once per stage and per compile."""
  if msg not in _logged:
    _logged.add(msg)
    log.log(level, msg)


def _kernel(num_heads: int, length: int, window: int, interpret: bool):
  block = block_size(length)
  shape = (length, length)
  mask = splash_mask.CausalMask(shape) if window < 0 else splash_mask.LocalMask(shape, (window, 0), 0)
  sizes = splash_kernel.BlockSizes(
      block_q=block, block_kv=block, block_kv_compute=block,
      block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
      use_fused_bwd_kernel=True)  # dq in the dkv kernel: one backward pass over the blocks
  return splash_kernel.make_splash_mha(
      splash_mask.MultiHeadMask([mask] * num_heads), block_sizes=sizes, head_shards=1, q_seq_shards=1,
      interpret=interpret)


def _local(q_BLHK, k_BLHK, v_BLHK, segment_ids_BL, *, window: int, interpret: bool):
  """Splash attention on this device's rows and heads; q is pre-scaled (the kernel does not scale)."""
  _, L, H, K = q_BLHK.shape
  kernel = _kernel(H, L, window, interpret)
  q_BLHK = (q_BLHK.astype(jnp.float32) * K ** -0.5).astype(q_BLHK.dtype)
  q_BHLK, k_BHLK, v_BHLK = (x.transpose(0, 2, 1, 3) for x in (q_BLHK, k_BLHK, v_BLHK))
  seg_BL = segment_ids_BL.astype(jnp.int32)
  row = lambda q, k, v, s: kernel(q, k, v, segment_ids=splash_kernel.SegmentIds(s, s))  # noqa: E731
  return jax.vmap(row)(q_BHLK, k_BHLK, v_BHLK, seg_BL).transpose(0, 2, 1, 3)


def splash_attention(q_BLHK: jax.Array, k_BLHK: jax.Array, v_BLHK: jax.Array, segment_ids_BL: jax.Array,
                     *, window: int = -1, interpret: bool = False) -> jax.Array:
  """Causal attention within documents and `window` keys back (-1 = all): (B, L, H, K) in q's dtype.

  Needs `unsupported(L, False)` to be None. Under a mesh with the hnet axes, runs per shard: the
  batch over data × fsdp and the heads over tensor where they divide, replicated otherwise.
  """
  B, L, H, _ = q_BLHK.shape
  local = lambda q, k, v, s: _local(q, k, v, s, window=window, interpret=interpret)  # noqa: E731
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or not set(BATCH_AXES + ("tensor",)) <= set(mesh.axis_names):
    return local(q_BLHK, k_BLHK, v_BLHK, segment_ids_BL)
  batch = BATCH_AXES if B % int(np.prod([mesh.shape[a] for a in BATCH_AXES])) == 0 else None
  heads = "tensor" if H % mesh.shape["tensor"] == 0 else None
  qkv_spec = P(batch, None, heads, None)
  # check_vma=False: the kernel's pallas_calls declare outputs without varying-axes types, which
  # shard_map's check rejects (jax 0.10.2).
  return jax.shard_map(local, mesh=mesh, in_specs=(qkv_spec, qkv_spec, qkv_spec, P(batch, None)),
                       out_specs=qkv_spec, check_vma=False)(q_BLHK, k_BLHK, v_BLHK, segment_ids_BL)
