"""Training: `train_and_evaluate(config, workdir)`, one linear function in sections.

logging -> mesh -> input -> model & optimizer -> shard -> update step -> restore ->
evals -> loop. `train_step` and `eval_step` are plain `jax.jit` functions over a
`TrainState` pytree with explicit shardings.
"""
# pylint: disable=invalid-name
import json
import logging
import math
import os
import signal
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from hnet import sharding, storage
from hnet.config import ModelConfig, model_config_from_dict
from hnet.model import routers
from hnet.model.flops import flops_per_byte
from hnet.model.lm import HNetLM, count_params
from hnet.model.loss import LN2, ControllerState, next_byte_nll
from hnet.train import eval_totals, goodput, resume_config, workdir_lock
from hnet.train.accelerators import device_peak_flops
from hnet.train.checkpoint import Checkpointer, check_param_shapes
from hnet.train.metric_writer import MetricWriter
from hnet.train.optim import is_frozen, make_optimizer, stage_lr_multipliers
from hnet.train.profile import StepProfiler

log = logging.getLogger(__name__)


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any  # nnx.State of the model's Params
  opt_state: Any
  controller: ControllerState


# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------
def forward_nll(params, graphdef, batch: dict, *, train: bool):
  """(logits_BLV, nll_BL, aux) of the model on one batch: nll_BL is the next-byte NLL in nats (float32), zero
  where loss_mask is. The one forward + NLL of training, the trainer's evals and eval.py's scoring."""
  model = nnx.merge(graphdef, params)
  logits_BLV, aux = model(batch["inputs"], batch["segment_ids"], train=train)
  with jax.named_scope("loss"):
    nll_BL = next_byte_nll(logits_BLV, batch["targets"], batch["loss_mask"])
  return logits_BLV, nll_BL, aux


def loss_and_stats(params, graphdef, batch, weights, *, train: bool):
  """Returns (weighted router loss, (nll_sum, count, router_losses, metrics)) for one (micro-)batch."""
  _, nll_BL, aux = forward_nll(params, graphdef, batch, train=train)
  with jax.named_scope("loss"):
    nll_sum, count = jnp.sum(nll_BL), jnp.sum(batch["loss_mask"].astype(jnp.float32))
  router = sum((w * l for w, l in zip(weights, aux["router_losses"])), jnp.float32(0.0))
  return router, (nll_sum, count, aux["router_losses"], aux["metrics"])


def make_train_step(graphdef, model_cfg: ModelConfig, c, tx, schedule):
  accum = c.train.grad_accum_steps
  router_cls = routers.router_class(model_cfg.router)

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    weights = (router_cls.loss_weight(c.opt.ratio_loss_weight, state.controller),) * (model_cfg.num_stages - 1)
    total_count = jnp.maximum(jnp.sum(batch["loss_mask"]), 1.0)

    def objective(params, micro):
      router, stats = loss_and_stats(params, graphdef, micro, weights, train=True)
      return stats[0] / total_count + router / accum, stats

    grad_fn = jax.value_and_grad(objective, has_aux=True)
    micro_BL = jax.tree.map(lambda x: x.reshape(accum, x.shape[0] // accum, *x.shape[1:]), batch)

    def accumulate(carry, micro):
      grads, loss, nll, metrics = carry
      (l, (nll_sum, _, router_losses, m)), g = grad_fn(state.params, micro)
      m = {**m, **{f"stage{i}/router_loss": r for i, r in enumerate(router_losses)}}
      add = lambda a, b: jax.tree.map(jnp.add, a, b)  # noqa: E731
      return (add(grads, g), loss + l, nll + nll_sum, add(metrics, m)), None

    zeros_g = jax.tree.map(jnp.zeros_like, state.params)
    first = jax.tree.map(lambda x: x[0], micro_BL)
    (_, stats_shape), _ = jax.eval_shape(grad_fn, state.params, first)
    zeros_m = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), {
        **stats_shape[3], **{f"stage{i}/router_loss": r for i, r in enumerate(stats_shape[2])}})
    (grads, loss, nll, metrics), _ = jax.lax.scan(
        accumulate, (zeros_g, jnp.float32(0.0), jnp.float32(0.0), zeros_m), micro_BL)
    metrics = {k: v / accum for k, v in metrics.items()}

    with jax.named_scope("optimizer"):
      updates, opt_state = tx.update(grads, state.opt_state, state.params)
      params = jax.tree.map(jnp.add, state.params, updates)
    controller = router_cls.next_controller(model_cfg, state.controller, metrics, kp=c.opt.delete_gate_kp,
                                        ki=c.opt.delete_gate_ki, two_sided=c.opt.delete_gate_two_sided)
    if controller is not state.controller:  # a controlled loss weight (MrT5): log it
      metrics["stage0/gate_loss_weight"] = controller.alpha
    grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
    metrics.update(loss=loss, bits_per_byte=nll / total_count / LN2, grad_norm=grad_norm,
                   learning_rate=schedule(state.step), target_bytes=total_count)
    new_state = TrainState(state.step + 1, params, opt_state, controller)
    return new_state, metrics

  return train_step


def make_eval_step(graphdef):
  def eval_step(params, batch: dict) -> dict:
    _, (nll_sum, count, _, metrics) = loss_and_stats(params, graphdef, batch, (), train=False)
    return {"nll_sum": nll_sum, "count": count, "positions": jnp.sum(batch["segment_ids"] > 0), **metrics}

  return eval_step


# ---------------------------------------------------------------------------------------------
# Set-up helpers shared with eval.py
# ---------------------------------------------------------------------------------------------
def abstract_model(model_cfg: ModelConfig, seed: int = 0):
  """(graphdef, abstract params): the model's structure and parameter shapes, nothing allocated."""
  abstract = nnx.eval_shape(lambda: HNetLM(model_cfg, rngs=nnx.Rngs(params=seed)))
  graphdef, abstract_params, rest = nnx.split(abstract, nnx.Param, ...)
  if jax.tree.leaves(rest):
    raise ValueError("model has non-parameter state, which the trainer does not handle")
  return graphdef, abstract_params


def make_model(model_cfg: ModelConfig, mesh, seed: int):
  """(graphdef, sharded params) initialised directly into their shardings."""
  graphdef, abstract_params = abstract_model(model_cfg, seed)
  params_sharding = sharding.param_shardings(abstract_params, mesh)

  @jax.jit
  def init():
    return nnx.split(HNetLM(model_cfg, rngs=nnx.Rngs(params=seed)), nnx.Param, ...)[1]

  with jax.set_mesh(mesh):
    params = jax.jit(init, out_shardings=params_sharding)()
  return graphdef, params, params_sharding


def load_frozen_params(model_cfg: ModelConfig, params, params_sharding, mesh):
  """Parameters of frozen sub-models replaced by their checkpoints' (BLT's entropy LM); others unchanged.

  The routers say which sub-modules they hold frozen and where their weights are (`Router.pretrained`).
  """
  pretrained = routers.router_class(model_cfg.router).pretrained(model_cfg)
  if not pretrained:
    return params
  from hnet.train import runs  # pylint: disable=import-outside-toplevel
  for s in range(model_cfg.num_stages - 1):
    path = ("backbone", *("inner",) * s, "router")
    for name, (key, workdir) in pretrained.items():
      where = f"{key}={workdir!r}"
      try:
        loaded = runs.load(workdir, devices=list(mesh.devices.flat))
      except (FileNotFoundError, ValueError) as e:
        raise type(e)(f"{where}: {e}") from None
      target = _subtree(params, path)[name]
      check_param_shapes(loaded.params, target,
                         f"{where}: its checkpoint does not match the {name} built from its config")
      with jax.set_mesh(mesh):
        _subtree(params, path)[name] = jax.device_put(loaded.params, _subtree(params_sharding, path)[name])
      log.info("%s of stage %d: step %d of %s (frozen)", name, s, loaded.step, loaded.checkpoint_dir)
  return params


def _subtree(tree, path: tuple[str, ...]):
  for key in path:
    tree = tree[key]
  return tree


def compile_state_init(params, tx, mesh):
  """The compiled step-0 state constructor for `params` (arrays, or shapes with shardings) and its output shardings.

  Every per-parameter optimizer leaf (AdamW's moments) takes its parameter's sharding: left to
  XLA, `zeros_like` moments come out replicated, a full copy per device under FSDP. Other leaves
  (counts, scalars: step, controller) are replicated.
  """
  shardings = jax.tree.map(lambda a: getattr(a, "sharding", None), params)

  def like_param(v, s):
    # MaskedNode: a frozen parameter's empty slot under multi_transform.
    if s is None or isinstance(v, optax.MaskedNode):
      return v
    return jax.lax.with_sharding_constraint(v, s)

  def init(p):
    opt_state = optax.tree_map_params(tx, like_param, tx.init(p), shardings, transform_non_params=lambda v: v,
                                      is_leaf=lambda v: isinstance(v, optax.MaskedNode))
    return TrainState(jnp.zeros((), jnp.int32), p, opt_state, ControllerState.init())

  with jax.set_mesh(mesh):
    compiled = jax.jit(init).lower(params).compile()
  replicated = NamedSharding(mesh, P())
  state_sharding = jax.tree.map(lambda s: s if isinstance(s, NamedSharding) else replicated,
                                compiled.output_shardings)
  return compiled, state_sharding


def init_train_state(params, tx, mesh) -> tuple[TrainState, Any]:
  """Step 0 state on the mesh and its sharding."""
  compiled, state_sharding = compile_state_init(params, tx, mesh)
  with jax.set_mesh(mesh):
    return jax.device_put(compiled(params), state_sharding), state_sharding


def jit_train_step(graphdef, model_cfg: ModelConfig, c, tx, schedule, state_sharding, mesh):
  """The jitted update step exactly as training runs it: sharded state donated, metrics replicated."""
  batch_sharding = sharding.batch_sharding(mesh)
  return jax.jit(make_train_step(graphdef, model_cfg, c, tx, schedule),
                 in_shardings=(state_sharding, batch_sharding),
                 out_shardings=(state_sharding, NamedSharding(mesh, P())), donate_argnums=0)


def abstract_train_step(c, model_cfg: ModelConfig, mesh):
  """(jitted step, abstract state, abstract batch, parameter count): the training step of `c` on `mesh` with
  every input a shape carrying its sharding, ready to lower and compile (`--aot`, benchmarks); nothing is
  allocated. Lower it under `jax.set_mesh(mesh)`."""
  graphdef, abstract_params = abstract_model(model_cfg, c.seed)
  params_sharding = sharding.param_shardings(abstract_params, mesh)
  params = jax.tree.map(  # the shardings tree has one NamedSharding per Variable (a prefix of the params tree)
      lambda s, var: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), var),
      params_sharding, abstract_params)
  tx, schedule = make_optimizer(c.opt, abstract_params, num_steps=c.train.num_steps, model_cfg=model_cfg)
  init, state_sharding = compile_state_init(params, tx, mesh)
  state = sharding.abstract_with_shardings(init.out_info, state_sharding)
  batch = sharding.abstract_batch(c.train.batch_size, c.data.seq_len, mesh)
  with jax.set_mesh(mesh):
    step = jit_train_step(graphdef, model_cfg, c, tx, schedule, state_sharding, mesh)
  num_params = sum(math.prod(x.shape) for x in jax.tree.leaves(abstract_params))
  return step, state, batch, num_params


def check_batch_divides(c, mesh) -> None:
  """train.batch_size / grad_accum_steps rows must split evenly over the data-parallel devices."""
  data_parallel = sharding.data_parallel_size(mesh.shape)
  B, A = c.train.batch_size, c.train.grad_accum_steps
  if B % A:
    raise ValueError(f"train.batch_size={B} must be divisible by train.grad_accum_steps={A}")
  if (B // A) % data_parallel:
    raise ValueError(f"train.batch_size / grad_accum_steps = {B // A} must be divisible by the "
                     f"data-parallel size data*fsdp = {data_parallel}")


def evaluate(eval_step_fn, params, data_iter, batch_sharding, num_stages: int, max_batches: int = -1) -> dict:
  """Exact bits/byte over the iterator (or its first `max_batches` batches), compression and mean router stats."""
  def score(batch: dict) -> tuple:
    out = jax.device_get(eval_step_fn(params, sharding.to_global(batch, batch_sharding)))
    return out.pop("nll_sum"), out.pop("count"), out.pop("positions"), out

  return eval_totals.accumulate(data_iter, score, num_stages, max_batches).scalars()


class _StopSignal:
  """SIGTERM / SIGINT set a flag; the loop saves a checkpoint and exits cleanly."""

  def __init__(self):
    self.received = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    self.received = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


# ---------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------
def train_and_evaluate(c, workdir: str, *, progress: bool = True, stop_after: int | None = None,
                       init_from: str | None = None) -> dict:
  """Trains `c` in `workdir`, resuming from its latest checkpoint; returns the final metrics.

  The work dir is locked for the call (`workdir_lock`) and must hold no other run (`resume_config`).
  `stop_after` ends this call (with a checkpoint) after that many steps, as a preemption would.
  `init_from` (a work dir): a new run starts from the parameters of that run's latest checkpoint.
  """
  storage.makedirs(workdir)
  with workdir_lock.hold(workdir, enabled=jax.process_index() == 0):
    return _train_and_evaluate(c, workdir, progress, stop_after, init_from)


def _init_source(init_from: str, workdir: str) -> tuple[str, int]:
  """(checkpoints dir, step) of the latest checkpoint of the run in `init_from`; one-line errors."""
  from hnet.train import runs  # pylint: disable=import-outside-toplevel
  if storage.resolve(init_from) == storage.resolve(workdir):
    raise ValueError(f"--init_from={init_from} is the work dir itself: give the new run another --workdir")
  try:
    _, ckpt_dir, step = runs.resolve(init_from)
  except (FileNotFoundError, ValueError) as e:
    raise type(e)(f"--init_from={init_from}: {e}") from None
  return ckpt_dir, step


def _params_of(ckpt_dir: str, step: int, abstract_params):
  source = Checkpointer(ckpt_dir, async_save=False)
  try:
    return source.restore_params(abstract_params, step, what="the model of this config (--init_from)")[0]
  finally:
    source.close()


def _train_and_evaluate(c, workdir: str, progress: bool, stop_after: int | None, init_from: str | None) -> dict:
  from hnet.data import pipeline, sharded  # pylint: disable=import-outside-toplevel  (grain/tfds are heavy)

  # --- logging -------------------------------------------------------------------------------
  clock = goodput.Goodput()  # where the wall time goes (hnet/train/goodput.py)
  is_main = jax.process_index() == 0
  config_json = json.loads(c.to_json_best_effort())
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=c.ckpt.keep, async_save=c.ckpt.async_save,
                      owner=True)
  resuming = any(not ckpt.params_only(s) for s in ckpt.all_steps())
  resume_config.check_same_run(workdir, config_json, resuming=resuming, checkpointer=ckpt)
  init_source = _init_source(init_from, workdir) if init_from else None
  if is_main:
    with storage.open_file(os.path.join(workdir, "config.json"), "w") as f:
      json.dump(config_json, f, indent=2)
  model_cfg = model_config_from_dict(c.model)

  # --- mesh ----------------------------------------------------------------------------------
  mesh = sharding.mesh_of_config(c.mesh)
  batch_sharding = sharding.batch_sharding(mesh)
  B = c.train.batch_size
  check_batch_divides(c, mesh)

  # --- input ---------------------------------------------------------------------------------
  stats = pipeline.prepare(c.data)
  log.info("data: %s", stats)
  train_iter = sharded.make_train_input(c)

  eval_batch = sharding.round_up_batch(c.eval.batch_size, mesh.shape)

  def eval_iter():
    return pipeline.make_eval_iterator(c.data, split=c.data.eval_split, global_batch_size=eval_batch)

  # --- model & optimizer ---------------------------------------------------------------------
  graphdef, params, params_sharding = make_model(model_cfg, mesh, c.seed)
  params = load_frozen_params(model_cfg, params, params_sharding, mesh)
  tx, schedule = make_optimizer(c.opt, params, num_steps=c.train.num_steps, model_cfg=model_cfg)
  log.info("per-stage lr multipliers (outer -> inner): %s",
           ", ".join(f"{m:.3g}" for m in stage_lr_multipliers(c.opt, model_cfg)))
  num_params = count_params(nnx.merge(graphdef, params))
  frozen = sum(int(x.size) for p, x in jax.tree_util.tree_leaves_with_path(params) if is_frozen(p))
  fpb = flops_per_byte(model_cfg, c.data.seq_len, train=True)
  peak, device_kind = device_peak_flops()
  log.info("model: %s parameters%s, %.3g forward FLOPs/byte; devices: %d x %s", f"{num_params:,}",
           f" ({frozen:,} of them frozen)" if frozen else "", fpb, jax.device_count(), device_kind)

  # --- shard ---------------------------------------------------------------------------------
  state, state_sharding = init_train_state(params, tx, mesh)
  replicated = NamedSharding(mesh, P())

  # --- update step ---------------------------------------------------------------------------
  train_step = jit_train_step(graphdef, model_cfg, c, tx, schedule, state_sharding, mesh)
  eval_step = jax.jit(make_eval_step(graphdef), in_shardings=(params_sharding, batch_sharding),
                      out_shardings=replicated)

  # --- restore -------------------------------------------------------------------------------
  writer = MetricWriter(workdir, enabled=is_main)
  with clock.measure("restore"):
    restored = ckpt.restore(sharding.abstract_with_shardings(state, state_sharding), train_iter)
  if restored is not None:
    state, _ = restored
    log.info("resumed from step %d in %s", int(state.step), ckpt.directory)
  elif resuming:
    log.warning("no checkpoint under %s restores (the corrupt ones are moved aside): starting at step 0",
                ckpt.directory)
  if restored is None and init_source:  # a new run from another run's weights: fresh optimizer, step 0
    with clock.measure("restore"):
      state, _ = init_train_state(
          _params_of(*init_source, sharding.abstract_with_shardings(state.params, state_sharding.params)), tx, mesh)
    log.info("starting from the parameters of step %d in %s", init_source[1], init_source[0])
  elif restored is None and (pretrained := ckpt.restore_params(
      sharding.abstract_with_shardings(state.params, state_sharding.params))):
    state, _ = init_train_state(pretrained[0], tx, mesh)  # fine-tuning: fresh optimizer, step 0
    log.info("fine-tuning from the parameters of step %d in %s", pretrained[1], ckpt.directory)
  start_step = int(jax.device_get(state.step))
  if is_main and start_step == 0:
    writer.write_text("config", "```\n" + c.to_json_best_effort(indent=2) + "\n```")

  # --- evals ---------------------------------------------------------------------------------
  def run_eval(step: int) -> dict:
    final_eval = step == c.train.num_steps and c.train.full_final_eval
    with jax.set_mesh(mesh):
      out = evaluate(eval_step, state.params, eval_iter(), batch_sharding, model_cfg.num_stages,
                     -1 if final_eval else c.train.eval_batches)
    writer.write(step, {f"eval/{k}": v for k, v in out.items()})
    return out

  # --- loop ----------------------------------------------------------------------------------
  bytes_per_step = B * c.data.seq_len
  pending: list[tuple[int, dict]] = []
  last_log_step = start_step
  profiler = StepProfiler(workdir, tuple(c.train.profile_steps), is_main or c.train.profile_all_hosts)
  start_time = time.time()
  final: dict = {}
  eval_out: dict = {}
  bar = _progress_bar(progress and is_main, start_step, c.train.num_steps)

  def flush(step: int) -> dict:
    """Fetches pending step metrics, stops on a non-finite loss, writes the mean of the window."""
    nonlocal pending, last_log_step
    if not pending:
      return {}
    with clock.measure("step"):  # where the host waits for the window's steps to finish on the device
      host = jax.device_get([m for _, m in pending])
    for (s, _), m in zip(pending, host):
      if not math.isfinite(float(m["loss"])):
        raise FloatingPointError(
            f"non-finite loss {float(m['loss'])} at step {s} (steps {pending[0][0]}..{pending[-1][0]} since the "
            f"last check); the last good checkpoint in {ckpt.directory} is intact: lower opt.lr or check the data")
    steps = step - last_log_step if step > last_log_step else len(pending)
    window = {k: float(np.mean([m[k] for m in host])) for k in host[-1]}
    window.update(clock.window(steps))  # step_time (evals and saves left out), data_wait_s, device_step_s, ...
    step_time = window["step_time"]
    window.update(bytes_per_second=bytes_per_step / step_time)
    if peak:
      window["mfu"] = 3 * fpb * bytes_per_step / step_time / (peak * jax.device_count())
    writer.write(step, {f"train/{k}": v for k, v in window.items()})
    pending, last_log_step = [], step
    return window

  stop_reason = None
  step = start_step
  clock.setup_done()
  try:
    with _StopSignal() as stop, jax.set_mesh(mesh):
      while step < c.train.num_steps:
        with clock.measure("data"):
          batch = sharding.to_global(next(train_iter), batch_sharding)
        profiler.before(step + 1)
        with clock.measure("compile" if step == start_step else "step"):
          state, metrics = train_step(state, batch)
          if step == start_step:  # the first step compiles: keep it out of the throughput windows
            jax.block_until_ready(metrics)
        step += 1
        pending.append((step, metrics))
        profiler.after(step, metrics)
        if step == start_step + 1:
          last_log_step = step
          clock.new_window()
        if step % c.train.log_every == 0 or step == c.train.num_steps:
          final = flush(step) or final
          if bar is not None:
            bar.set_postfix(loss=f"{final['loss']:.3f}", bpb=f"{final['bits_per_byte']:.3f}",
                            bytes_s=f"{final['bytes_per_second']:,.0f}", refresh=False)
        if bar is not None:
          bar.update(1)
        if step % c.train.eval_every == 0 or step == c.train.num_steps:
          with clock.measure("eval"):
            eval_out = run_eval(step)
          if bar is not None:
            bar.write(f"step {step}: validation bits/byte {eval_out['bits_per_byte']:.4f}")
        if stop.received:
          stop_reason = stop.received
        elif c.train.max_minutes > 0 and time.time() - start_time > 60 * c.train.max_minutes:
          stop_reason = f"train.max_minutes={c.train.max_minutes}"
        elif stop_after is not None and step - start_step >= stop_after and step < c.train.num_steps:
          stop_reason = f"stop_after={stop_after}"
        if step % c.ckpt.every == 0 or step == c.train.num_steps or stop_reason:
          flush(step)  # never checkpoint past a non-finite loss
          with clock.measure("checkpoint"):
            ckpt.save(step, state, train_iter, config_json)
        if stop_reason:
          log.warning("stopping at step %d (%s): checkpoint saved", step, stop_reason)
          break
  finally:  # also on a non-finite loss: flush the writers, finish pending async saves
    profiler.stop()
    if bar is not None:
      bar.close()
    with clock.measure("checkpoint"):
      ckpt.close()
    time_parts = clock.summary()
    writer.write(step, {f"goodput/{k}": v for k, v in time_parts.items()})
    writer.close()
  return {"step": step, "train": final, "eval": eval_out, "num_params": num_params,
          "flops_per_byte": fpb, "stopped": stop_reason, "goodput": time_parts}


def _progress_bar(enabled: bool, start: int, total: int):
  if not enabled:
    return None
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  return tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True)
