"""`ssd_pallas`: the SSD scan (same maths and signature as `hnet.kernels.ssd_xla.ssd_chunked`) through Pallas kernels.

XLA prepares the cheap per-position quantities (dt, the within-chunk cumsum of dt·A, the decays to
the chunk end and from the chunk start, run ids) and lays the inputs out head-major; one kernel
then walks the chunks with the state on chip and returns the outputs, the chunk-entering states
and the final state; its partner walks them back for the gradients (`jax.custom_vjp`). The
cotangents of the per-position rows flow back to dt and A through XLA's autodiff of the preparation.

Kernel by platform: Mosaic on TPU, Triton on GPU (`jax.lax.platform_dependent`, so an ahead-of-time
compile for another platform picks that platform's kernel); on CPU the TPU kernel runs in Pallas
interpret mode (slow: for tests). `backend='tpu'|'gpu'` forces one, with `interpret=True` on CPU.
Each branch prepares its own inputs, so the GPU one may use a shorter chunk (`GPU_MAX_CHUNK`).
"""
# pylint: disable=invalid-name
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from hnet.kernels import ssd_gpu, ssd_tpu
from hnet.kernels.ssd_chunk import ROWS
from hnet.kernels.ssd_xla import check_shapes, run_ids

f32 = jnp.float32
BACKENDS = ("tpu", "gpu")
GPU_MAX_CHUNK = 128  # (Q, Q) float32 tiles of the Triton kernel must fit an H100 SM's shared memory


class _Config(NamedTuple):
  chunk: int
  backend: str  # 'tpu' or 'gpu'
  interpret: bool


def check_sizes(chunk_size: int, head_dim: int, d_state: int) -> None:
  """Sizes both kernels accept: powers of two ≥ 16 (Triton's matmul tiles; TPU's bf16 sublane tile)."""
  for name, v in (("chunk_size", chunk_size), ("head_dim", head_dim), ("d_state", d_state)):
    if v < 16 or v & (v - 1):
      raise ValueError(f"ssd_pallas: {name}={v} must be a power of two >= 16")


def _kernel(direction: str, cfg: _Config, *args):
  module = {"tpu": ssd_tpu, "gpu": ssd_gpu}[cfg.backend]
  return getattr(module, direction)(*args, chunk=cfg.chunk, interpret=cfg.interpret)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _scan(x_BHLP, v_BHC8Q, B_BGLN, C_BGLN, S0t_BHNP, cfg):
  y_BHLP, _, final_BHNP = _kernel("forward", cfg, x_BHLP, v_BHC8Q, B_BGLN, C_BGLN, S0t_BHNP)
  return y_BHLP, final_BHNP


def _scan_fwd(x_BHLP, v_BHC8Q, B_BGLN, C_BGLN, S0t_BHNP, cfg):
  y_BHLP, states_BHCNP, final_BHNP = _kernel("forward", cfg, x_BHLP, v_BHC8Q, B_BGLN, C_BGLN, S0t_BHNP)
  return (y_BHLP, final_BHNP), (x_BHLP, v_BHC8Q, B_BGLN, C_BGLN, states_BHCNP)


def _scan_bwd(cfg, res, cotangents):
  x_BHLP, v_BHC8Q, B_BGLN, C_BGLN, states_BHCNP = res
  dy_BHLP, dfinal_BHNP = cotangents
  dx_BHLP, dv_BHC8Q, dB_BGLN, dC_BGLN, dS0t_BHNP = _kernel(
      "backward", cfg, x_BHLP, v_BHC8Q, B_BGLN, C_BGLN, states_BHCNP, dy_BHLP.astype(x_BHLP.dtype),
      dfinal_BHNP.astype(f32))
  return dx_BHLP, dv_BHC8Q, dB_BGLN.astype(B_BGLN.dtype), dC_BGLN.astype(C_BGLN.dtype), dS0t_BHNP


_scan.defvjp(_scan_fwd, _scan_bwd)


def ssd_pallas(x_BLHP: jax.Array, dt_BLH: jax.Array, A_H: jax.Array, B_BLGN: jax.Array, C_BLGN: jax.Array,
               *, chunk_size: int, segment_ids_BL: jax.Array | None = None,
               initial_state_BHPN: jax.Array | None = None, backend: str | None = None,
               interpret: bool = False) -> tuple[jax.Array, jax.Array]:
  """Chunked SSD through the Pallas kernels: (y in x's dtype, final float32 state), as `ssd_chunked`.

  The GPU kernel walks chunks of at most `GPU_MAX_CHUNK` positions (its (Q, Q) tiles live in an
  SM's shared memory); a longer `chunk_size` is split, which changes nothing but rounding.
  """
  B, L, H, P, G, N = check_shapes(x_BLHP, dt_BLH, A_H, B_BLGN, C_BLGN)
  check_sizes(chunk_size, P, N)
  if backend not in (None,) + BACKENDS:
    raise ValueError(f"ssd_pallas: backend={backend!r}; use None (the platform's kernel) or one of {BACKENDS}")
  if initial_state_BHPN is None:
    initial_state_BHPN = jnp.zeros((B, H, P, N), f32)
  args = (x_BLHP, dt_BLH, A_H, B_BLGN, C_BLGN, run_ids(segment_ids_BL, B, L), initial_state_BHPN)
  tpu = functools.partial(_ssd, cfg=_Config(chunk_size, "tpu", interpret))
  gpu = functools.partial(_ssd, cfg=_Config(min(chunk_size, GPU_MAX_CHUNK), "gpu", interpret))
  if backend is not None:
    return {"tpu": tpu, "gpu": gpu}[backend](*args)
  return jax.lax.platform_dependent(*args, tpu=tpu, cuda=gpu,
                                    default=functools.partial(_ssd, cfg=_Config(chunk_size, "tpu", True)))


def _ssd(x_BLHP, dt_BLH, A_H, B_BLGN, C_BLGN, run_BL, S0_BHPN, *, cfg: _Config):
  """XLA preparation of the per-position rows and head-major layouts around one backend's kernels."""
  B, L, H, _ = x_BLHP.shape
  Q = cfg.chunk
  C = -(-L // Q)
  pad = C * Q - L
  # Padding at the end: dt = 0 (decay 1, no input) and the last run continues, so the final state is unchanged.
  pad_L = lambda v, **kw: jnp.pad(v, [(0, 0), (0, pad)] + [(0, 0)] * (v.ndim - 2), **kw)  # noqa: E731
  run_BCQ = pad_L(run_BL, mode="edge").reshape(B, C, Q)
  dt_BHCQ = pad_L(dt_BLH.astype(f32)).reshape(B, C, Q, H).transpose(0, 3, 1, 2)
  acs_BHCQ = jnp.cumsum(dt_BHCQ * A_H.astype(f32)[None, :, None, None], axis=-1)
  run_B1CQ = run_BCQ[:, None]
  run_end_B1C1 = run_B1CQ[..., -1:]
  run_enter_B1C1 = jnp.pad(run_end_B1C1[:, :, :-1], [(0, 0), (0, 0), (1, 0), (0, 0)])  # initial state: run 0
  te_BHCQ = jnp.exp(jnp.where(run_B1CQ == run_end_B1C1, acs_BHCQ[..., -1:] - acs_BHCQ, -jnp.inf))
  fs_BHCQ = jnp.exp(jnp.where(run_B1CQ == run_enter_B1C1, acs_BHCQ, -jnp.inf))
  run_BHCQ = jax.lax.stop_gradient(jnp.broadcast_to(run_B1CQ, (B, H, C, Q)).astype(f32))
  zero_BHCQ = jnp.zeros((B, H, C, Q), f32)
  v_BHC8Q = jnp.stack([dt_BHCQ, acs_BHCQ, te_BHCQ, fs_BHCQ, run_BHCQ] + [zero_BHCQ] * (ROWS - 5), axis=3)

  dtype = x_BLHP.dtype
  x_BHLP = pad_L(x_BLHP).transpose(0, 2, 1, 3)
  B_BGLN = pad_L(B_BLGN.astype(dtype)).transpose(0, 2, 1, 3)
  C_BGLN = pad_L(C_BLGN.astype(dtype)).transpose(0, 2, 1, 3)
  S0t_BHNP = S0_BHPN.astype(f32).transpose(0, 1, 3, 2)
  y_BHLP, finalt_BHNP = _scan(x_BHLP, v_BHC8Q, B_BGLN, C_BGLN, S0t_BHNP, cfg)
  return y_BHLP.transpose(0, 2, 1, 3)[:, :L], finalt_BHNP.transpose(0, 1, 3, 2)
