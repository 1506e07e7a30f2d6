"""Model FLOPs per byte (forward), counted from the config: matmuls and attention/SSD contractions.

Conventions (documented in docs/model.md):
- A multiply-add is 2 FLOPs. Training FLOPs = 3 x forward (backward = 2 x forward).
- Every stage runs at its static length: the outer stage at L bytes, each inner stage at
  its chunk capacity M (what the hardware computes, padding included), so FLOPs/byte of a
  stage scale with M / L.
- Causal attention counts the lower triangle: a query at position t attends to
  min(t + 1, window + 1) keys; score and value products cost 2 * 2 * K FLOPs per key and head.
- Mamba2 SSD (chunk Q, state N, head dim P, H heads, G groups) per position:
  2 Q G N (C·Bᵀ) + 2 Q H P (intra-chunk mixing) + 2 H P N (chunk states) + 2 H P N (state→output).
- Elementwise work (norms, activations, conv, routing cosine, smoothing) is not counted,
  except the depthwise conv (2 W per channel) and the router / residual projections, which are matmuls.
- A frozen sub-model (BLT's entropy LM) runs its forward pass only, in training too: with
  train=True it counts a third of its forward FLOPs, so that 3 x the total is a training step's.
"""
from hnet.config import LayerGroup, ModelConfig, StageConfig
from hnet.model import routers


def attention_context(length: int, window: int) -> float:
  """Mean number of keys a causal query attends to over positions 0..length-1."""
  if window < 0 or window + 1 >= length:
    return (length + 1) / 2
  w = window + 1
  return (w * (w + 1) / 2 + (length - w) * w) / length


def layer_flops(group: LayerGroup, st: StageConfig, cfg: ModelConfig, length: int) -> dict[str, float]:
  """Forward FLOPs per position of one layer of `group` at a stage running `length` positions."""
  d = st.d_model
  out: dict[str, float] = {}
  if group.mixer == "attention":
    out["attn_proj"] = 2 * d * 3 * d + 2 * d * d
    out["attn_scores"] = 4 * d * attention_context(length, st.window)
  else:
    d_inner = cfg.ssm_expand * d
    heads = d_inner // cfg.ssm_head_dim
    n, g, q, p = cfg.ssm_d_state, 1, min(cfg.ssm_chunk_size, length), cfg.ssm_head_dim
    out["ssm_proj"] = 2 * d * (2 * d_inner + 2 * g * n + heads) + 2 * d_inner * d
    out["ssm_conv"] = 2 * cfg.ssm_d_conv * (d_inner + 2 * g * n)
    out["ssd"] = 2 * q * g * n + 2 * q * heads * p + 4 * heads * p * n
  if group.has_mlp:
    out["mlp"] = 6 * d * st.d_ff
  return out


def flops_breakdown(cfg: ModelConfig, seq_len: int, *, train: bool = False, basis: str = "capacity"
                    ) -> dict[str, float]:
  """Forward FLOPs per byte by component name, e.g. 'stage1/attn_scores'.

  basis='capacity' counts inner stages at their static capacity (what runs, padding
  included); basis='target' at exactly L / N (the useful work at the target ratio).
  """
  if basis == "capacity":
    lengths = routers.stage_lengths(cfg, seq_len, train=train)
  elif basis == "target":
    soft = train and routers.router_class(cfg.router).soft_in_training
    lengths = [seq_len]
    for st in cfg.stages[:-1]:
      lengths.append(lengths[-1] if soft else lengths[-1] / st.target_ratio)
  else:
    raise ValueError(f"flops basis {basis!r}: use 'capacity' or 'target'")
  out: dict[str, float] = {}

  def add(key: str, flops_per_position: float, length: int, count: int = 1):
    out[key] = out.get(key, 0.0) + count * flops_per_position * length / seq_len

  for s, st in enumerate(cfg.stages):
    length = lengths[s]
    for group in st.encoder + st.main + st.decoder:
      for name, f in layer_flops(group, st, cfg, length).items():
        add(f"stage{s}/{name}", f, length, group.count)
    if not st.is_innermost:
      add(f"stage{s}/residual_proj", 2 * st.d_model * st.d_model, length)
      router_flops = routers.router_class(cfg.router).flops_per_position(cfg, st)
      if router_flops:
        add(f"stage{s}/router", router_flops, length)
  out["lm_head"] = 2 * cfg.stages[0].d_model * cfg.vocab_size
  if cfg.entropy_lm is not None:
    out["stage0/entropy_lm"] = flops_per_byte(cfg.entropy_lm, seq_len, basis=basis) / (3 if train else 1)
  return out


def flops_per_byte(cfg: ModelConfig, seq_len: int, *, train: bool = False, basis: str = "capacity") -> float:
  """Forward model FLOPs per byte at sequence length `seq_len` (multiply by 3 for a training step).

  `train=True` counts the delete gate's soft mode (inner network over every position);
  `basis` as in `flops_breakdown`.
  """
  return sum(flops_breakdown(cfg, seq_len, train=train, basis=basis).values())
