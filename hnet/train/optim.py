"""AdamW with warmup-stable-decay or cosine schedule, clipping, decay mask and per-stage lr multipliers."""
import math

import jax
import optax

from hnet.config import ModelConfig
from hnet.model import routers
from hnet.model.lm import stage_of_param

# Parameters named like these get no weight decay: norms, biases, embeddings, Mamba2's A/D/dt.
NO_DECAY_NAMES = ("bias", "b", "conv_bias", "dt_bias", "A_log", "D", "embedding", "pad_dimension", "weight")


def path_names(path) -> tuple[str, ...]:
  """Plain strings for a jax tree path (dict keys, attributes, sequence indices)."""
  names = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        names.append(str(getattr(k, attr)))
        break
    else:
      names.append(str(k))
  return tuple(n for n in names if n != "value")


def is_frozen(path) -> bool:
  """Inside a router's frozen sub-model (`Router.frozen`, e.g. BLT's entropy LM): no update, no optimizer state."""
  names = path_names(path)
  frozen = {m for cls in routers.REGISTRY.values() for m in cls.frozen}
  return any(a == "router" and b in frozen for a, b in zip(names, names[1:]))


# The official H-Net code (goombalab/hnet, hnet/utils/train.py `group_params`) exempts parameters whose name ends
# in `.bias` or sits in a module named `norm`: in our names the biases and the Mamba2 gated norm (`norm_weight`;
# its `mixer.norm`). Its block norms (`norm1`, `norm2`), final `rmsnorm`, embeddings, A_log, D and dt_bias decay.
OFFICIAL_NO_DECAY_NAMES = ("bias", "b", "conv_bias", "norm_weight")
DECAY_RULES = ("default", "hnet")


def decay_mask(params, rule: str = "default"):
  """True where weight decay applies. 'default': not on norms, biases, embeddings, the width padding and
  Mamba2's A/D/dt (norm weights are named `weight` in an RMSNorm, or `norm_weight`); 'hnet': the official
  H-Net grouping (only biases and `norm` modules' weights exempt)."""
  if rule not in DECAY_RULES:
    raise ValueError(f"opt.decay_rule={rule!r}: use one of {DECAY_RULES}")

  def decays(path, _):
    names = path_names(path)
    leaf = names[-1]
    if rule == "hnet":
      return leaf not in OFFICIAL_NO_DECAY_NAMES
    return not (leaf in NO_DECAY_NAMES or leaf.startswith("norm") or any("norm" in n for n in names[:-1]))
  return jax.tree_util.tree_map_with_path(decays, params)


def hnet_lr_multipliers(model_cfg: ModelConfig, bytes_per_token: float) -> tuple[float, ...]:
  """H-Net's rule λ^s = sqrt(N_GPT · (positions stage s sees per byte) · D^S / D^s), outer -> inner.

  lr ∝ sqrt(batch size) in the positions each stage sees (a 1 / ∏_{i<s} N^i share of the bytes),
  and lr ∝ 1 / sqrt(width); N_GPT (`bytes_per_token`) anchors the main network to a BPE
  Transformer's learning rate (the paper's baseline reads 8192 bytes as ~1792 tokens: ~4.6).
  """
  d_inner = model_cfg.stages[-1].d_model
  out, share = [], 1.0
  for st in model_cfg.stages:
    out.append(math.sqrt(bytes_per_token * share * d_inner / st.d_model))
    share /= st.target_ratio
  return tuple(out)


def stage_lr_multipliers(c_opt, model_cfg: ModelConfig) -> tuple[float, ...]:
  """Per-stage lr multipliers from `opt.lr_multipliers` or `opt.lr_multiplier_rule`, outer -> inner."""
  explicit, rule, n = tuple(c_opt.lr_multipliers), c_opt.lr_multiplier_rule, model_cfg.num_stages
  if rule not in ("none", "hnet"):
    raise ValueError(f"opt.lr_multiplier_rule={rule!r}: use 'none' or 'hnet'")
  if explicit and rule != "none":
    raise ValueError(f"opt.lr_multipliers={explicit} and opt.lr_multiplier_rule={rule!r} both set the "
                     "multipliers: give one of them")
  if explicit and len(explicit) != n:
    raise ValueError(f"opt.lr_multipliers has {len(explicit)} entries but the model has {n} stages")
  if rule == "hnet":
    return hnet_lr_multipliers(model_cfg, c_opt.lr_rule_bytes_per_token)
  return tuple(float(m) for m in explicit) or (1.0,) * n


def lr_multiplier_tree(params, multipliers: tuple[float, ...], router_multiplier: float = 1.0):
  """Per-parameter lr multiplier: stage s gets multipliers[s] (H-Net's lambda^s); a router's own parameters
  that times `router_multiplier` (`opt.router_lr_multiplier`)."""
  def one(path, _):
    names = path_names(path)
    return float(multipliers[stage_of_param(names)]) * (router_multiplier if "router" in names else 1.0)
  return jax.tree_util.tree_map_with_path(one, params)


def scale_by_tree(multipliers_of) -> optax.GradientTransformation:
  """Multiplies each update by `multipliers_of(updates)` (a tree of floats of the same structure)."""
  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, m: u * m, updates, multipliers_of(updates)), state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def learning_rate_schedule(c_opt, num_steps: int) -> optax.Schedule:
  peak, warmup = c_opt.lr, max(int(c_opt.warmup_steps), 0)
  floor = peak * c_opt.min_lr_ratio
  if c_opt.schedule == "wsd":
    decay = max(int(num_steps * c_opt.decay_fraction), 1)
    stable = max(num_steps - warmup - decay, 0)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, max(warmup, 1)), optax.constant_schedule(peak),
         optax.linear_schedule(peak, floor, decay)],
        [max(warmup, 1), max(warmup, 1) + stable])
  if c_opt.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, peak, max(warmup, 1), max(num_steps, warmup + 1), floor)
  raise ValueError(f"opt.schedule={c_opt.schedule!r}: use 'wsd' or 'cosine'")


def make_optimizer(c_opt, params, *, num_steps: int, model_cfg: ModelConfig
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optax chain used by the trainer, and its schedule (for logging)."""
  schedule = learning_rate_schedule(c_opt, num_steps)
  multipliers = stage_lr_multipliers(c_opt, model_cfg)
  # Masks and multipliers are functions of the tree they get: under multi_transform that tree
  # holds the trainable parameters only.
  tx = optax.chain(
      optax.clip_by_global_norm(c_opt.grad_clip) if c_opt.grad_clip > 0 else optax.identity(),
      optax.scale_by_adam(b1=c_opt.b1, b2=c_opt.b2, eps=c_opt.eps),
      optax.add_decayed_weights(c_opt.weight_decay, mask=lambda tree: decay_mask(tree, c_opt.decay_rule)),
      optax.scale_by_learning_rate(schedule),
      scale_by_tree(lambda tree: lr_multiplier_tree(tree, multipliers, c_opt.router_lr_multiplier)),
  )
  labels = jax.tree_util.tree_map_with_path(lambda p, _: "frozen" if is_frozen(p) else "train", params)
  if "frozen" in jax.tree.leaves(labels):  # frozen parameters: no update and no optimizer state
    tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
  return tx, schedule
