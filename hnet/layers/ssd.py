"""Mamba2's SSD scan: a sequential reference and the chunked matmul form, with document resets.

Per head h, with state S (P×N):  S_t = exp(dt_t A_h) S_{t-1} + dt_t x_t B_tᵀ,  y_t = S_t C_t.
Head h reads group h // (H/G) of B and C. The state is zeroed wherever `segment_ids` changes,
so a packed row gives the same outputs as its documents run one by one. No D skip here.

Legend: R heads per group (H/G); T chunk boundaries (C+1: the initial state, then each chunk end);
S (inside the chunked form) the source position within a chunk, Q the target position.
"""
# pylint: disable=invalid-name
import jax
import jax.numpy as jnp

f32 = jnp.float32


def run_ids(segment_ids_BL: jax.Array | None, B: int, L: int) -> jax.Array:
  """Run index per position: +1 at every segment change, 0 at position 0 (which continues the initial state)."""
  if segment_ids_BL is None:
    return jnp.zeros((B, L), jnp.int32)
  change_BL = jnp.concatenate(
      [jnp.zeros((B, 1), bool), segment_ids_BL[:, 1:] != segment_ids_BL[:, :-1]], axis=1)
  return jnp.cumsum(change_BL, axis=1, dtype=jnp.int32)


def _check_shapes(x_BLHP, dt_BLH, A_H, B_BLGN, C_BLGN):
  B, L, H, P = x_BLHP.shape
  G, N = B_BLGN.shape[2:]
  if dt_BLH.shape != (B, L, H) or A_H.shape != (H,):
    raise ValueError(f"ssd: dt {dt_BLH.shape} / A {A_H.shape} do not match x {x_BLHP.shape}")
  if B_BLGN.shape != (B, L, G, N) or C_BLGN.shape != (B, L, G, N):
    raise ValueError(f"ssd: B {B_BLGN.shape} and C {C_BLGN.shape} must both be (B, L, G, N) = {(B, L, G, N)}")
  if H % G:
    raise ValueError(f"ssd: {H} heads are not divisible by {G} groups")
  return B, L, H, P, G, N


def ssd_naive(x_BLHP: jax.Array, dt_BLH: jax.Array, A_H: jax.Array, B_BLGN: jax.Array, C_BLGN: jax.Array,
              *, segment_ids_BL: jax.Array | None = None,
              initial_state_BHPN: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Sequential reference: one `lax.scan` step per position, in float32. Returns (y in x's dtype, final state)."""
  B, L, H, P, G, N = _check_shapes(x_BLHP, dt_BLH, A_H, B_BLGN, C_BLGN)
  R = H // G
  if initial_state_BHPN is None:
    initial_state_BHPN = jnp.zeros((B, H, P, N), f32)
  run_BL = run_ids(segment_ids_BL, B, L)
  reset_BL = run_BL != jnp.concatenate([run_BL[:, :1], run_BL[:, :-1]], axis=1)

  def step(S_BHPN, inp):
    x_BHP, dt_BH, B_BGN, C_BGN, reset_B = inp
    B_BHN = jnp.repeat(B_BGN, R, axis=1)
    C_BHN = jnp.repeat(C_BGN, R, axis=1)
    S_BHPN = jnp.where(reset_B[:, None, None, None], 0.0, S_BHPN * jnp.exp(dt_BH * A_H[None])[:, :, None, None])
    S_BHPN = S_BHPN + (dt_BH[:, :, None] * x_BHP)[:, :, :, None] * B_BHN[:, :, None, :]
    return S_BHPN, jnp.einsum("bhpn,bhn->bhp", S_BHPN, C_BHN)

  xs = (x_BLHP.astype(f32), dt_BLH.astype(f32), B_BLGN.astype(f32), C_BLGN.astype(f32), reset_BL)
  xs = jax.tree.map(lambda a: jnp.moveaxis(a, 1, 0), xs)  # scan over L
  final_BHPN, y_LBHP = jax.lax.scan(step, initial_state_BHPN.astype(f32), xs)
  return jnp.moveaxis(y_LBHP, 0, 1).astype(x_BLHP.dtype), final_BHPN


def _decay_matrix(a_XT: jax.Array, keep_XTT: jax.Array) -> jax.Array:
  """exp(Σ_{k=j+1..i} a_k) at [i, j] where `keep` (causal and same run), else 0; leading axes X batch.

  The sums come from a cumsum of entries masked *before* summing, so no difference of two large
  cumulative sums is taken; masked entries never reach `exp` (no inf, no NaN gradients).
  """
  T = a_XT.shape[-1]
  below_TT = jnp.arange(T)[:, None] > jnp.arange(T)[None, :]
  lead = (1,) * (a_XT.ndim - 1)
  a_XTT = jnp.where(below_TT.reshape(lead + (T, T)), a_XT[..., :, None], 0.0)  # row i: a_i left of the diagonal
  segsum_XTT = jnp.cumsum(a_XTT, axis=-2)
  return jnp.where(keep_XTT, jnp.exp(jnp.where(keep_XTT, segsum_XTT, 0.0)), 0.0)


def ssd_chunked(x_BLHP: jax.Array, dt_BLH: jax.Array, A_H: jax.Array, B_BLGN: jax.Array, C_BLGN: jax.Array,
                *, chunk_size: int, segment_ids_BL: jax.Array | None = None,
                initial_state_BHPN: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Chunked SSD (same maths as `ssd_naive`): intra-chunk quadratic part plus a pass over chunk states.

  Decays are float32; matmuls take the input dtype and accumulate in float32. Returns (y in x's
  dtype, final float32 state).
  """
  B, L, H, P, G, N = _check_shapes(x_BLHP, dt_BLH, A_H, B_BLGN, C_BLGN)
  if chunk_size < 1:
    raise ValueError(f"ssd: chunk_size must be positive, got {chunk_size}")
  R, Q = H // G, chunk_size
  C = -(-L // Q)
  pad = C * Q - L
  dtype = x_BLHP.dtype
  if initial_state_BHPN is None:
    initial_state_BHPN = jnp.zeros((B, H, P, N), f32)

  # Padding at the end: dt = 0 (decay 1, no input) and the last run continues, so the final state is unchanged.
  run_BL = run_ids(segment_ids_BL, B, L)
  dt_BLH = dt_BLH.astype(f32)
  a_BLH = dt_BLH * A_H.astype(f32)[None, None]
  X_BLHP = (x_BLHP.astype(f32) * dt_BLH[..., None]).astype(dtype)
  pad_zero = lambda v: jnp.pad(v, [(0, 0), (0, pad)] + [(0, 0)] * (v.ndim - 2))
  run_BCQ = jnp.pad(run_BL, [(0, 0), (0, pad)], mode="edge").reshape(B, C, Q)
  a_BCHQ = pad_zero(a_BLH).reshape(B, C, Q, H).transpose(0, 1, 3, 2)
  X_BCQGRP = pad_zero(X_BLHP).reshape(B, C, Q, G, R, P)
  B_BCQGN = pad_zero(B_BLGN.astype(dtype)).reshape(B, C, Q, G, N)
  C_BCQGN = pad_zero(C_BLGN.astype(dtype)).reshape(B, C, Q, G, N)

  # 1. Intra-chunk: y_q += Σ_{s≤q, same run} (C_q·B_s) exp(Σ_{s<k≤q} a_k) X_s.
  causal_QQ = jnp.arange(Q)[:, None] >= jnp.arange(Q)[None, :]
  keep_BCQQ = causal_QQ[None, None] & (run_BCQ[:, :, :, None] == run_BCQ[:, :, None, :])
  decay_BCHQQ = _decay_matrix(a_BCHQ, keep_BCQQ[:, :, None])
  CB_BCGQS = jnp.einsum("bcqgn,bcsgn->bcgqs", C_BCQGN, B_BCQGN, preferred_element_type=f32)
  scores_BCGRQS = CB_BCGQS[:, :, :, None] * decay_BCHQQ.reshape(B, C, G, R, Q, Q)
  y_BCQGRP = jnp.einsum("bcgrqs,bcsgrp->bcqgrp", scores_BCGRQS.astype(dtype), X_BCQGRP,
                        preferred_element_type=f32)

  # 2. Each chunk's own end state: inputs decayed to the chunk's last position (last row of the decay matrix).
  to_end_BCQGR1 = decay_BCHQQ[..., Q - 1, :].transpose(0, 1, 3, 2).reshape(B, C, Q, G, R, 1)
  Xend_BCQGRP = (X_BCQGRP.astype(f32) * to_end_BCQGR1).astype(dtype)
  local_BCGRPN = jnp.einsum("bcsgrp,bcsgn->bcgrpn", Xend_BCQGRP, B_BCQGN, preferred_element_type=f32)

  # 3. Across chunks: the state at boundary t (0 = initial, t = end of chunk t-1) sums earlier boundary
  # states decayed by whole chunks; a reset inside a chunk cuts it (its run id differs).
  acs_BCHQ = jnp.cumsum(a_BCHQ, axis=-1)
  chunk_a_BHT = jnp.pad(acs_BCHQ[..., -1].transpose(0, 2, 1), [(0, 0), (0, 0), (1, 0)])
  run_end_BT = jnp.pad(run_BCQ[:, :, -1], [(0, 0), (1, 0)])  # the initial state belongs to run 0
  keep_BTT = (jnp.tril(jnp.ones((C + 1, C + 1), bool))[None]
              & (run_end_BT[:, :, None] == run_end_BT[:, None, :]))
  carry_BHTT = _decay_matrix(chunk_a_BHT, keep_BTT[:, None])
  local_BTHPN = jnp.concatenate(
      [initial_state_BHPN.astype(f32)[:, None], local_BCGRPN.reshape(B, C, H, P, N)], axis=1)
  state_BTHPN = jnp.einsum("bhzt,bthpn->bzhpn", carry_BHTT, local_BTHPN, preferred_element_type=f32)
  enter_BCHPN, final_BHPN = state_BTHPN[:, :-1], state_BTHPN[:, -1]

  # 4. State entering each chunk → outputs, decayed from the chunk start, cut at the first reset in the chunk.
  same_run_BCQ = run_BCQ == run_end_BT[:, :-1, None]
  from_start_BCQH = jnp.where(same_run_BCQ[..., None], jnp.exp(acs_BCHQ.transpose(0, 1, 3, 2)), 0.0)
  y_off_BCQGRP = jnp.einsum("bcqgn,bcgrpn->bcqgrp", C_BCQGN, enter_BCHPN.reshape(B, C, G, R, P, N).astype(dtype),
                            preferred_element_type=f32)
  y_BCQGRP = y_BCQGRP + y_off_BCQGRP * from_start_BCQH.reshape(B, C, Q, G, R, 1)
  return y_BCQGRP.reshape(B, C * Q, H, P)[:, :L].astype(dtype), final_BHPN
