"""Load a checkpoint written by train.py onto whatever devices are present.

`load(workdir)` (or `load(checkpoint=<workdir>/checkpoints/<step>)`) reads the config
stored in the checkpoint (else `<workdir>/config.json`), applies `--config.*` overrides,
builds the model abstractly and restores only its parameters (orbax partial restore: no
optimizer state, no data iterator) into a mesh over the local devices (data axis = -1).
Problems give one-line `FileNotFoundError` / `ValueError` messages.
"""
import dataclasses
import json
import logging
import os
from typing import Any, Sequence

import jax
import ml_collections
from flax import nnx
from jax.sharding import NamedSharding

from hnet import sharding, storage
from hnet.config import ModelConfig, model_config_from_dict
from hnet.configs.stored import default_config, merge_config
from hnet.model.lm import HNetLM
from hnet.train.checkpoint import Checkpointer

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Loaded:
  """A restored model on a mesh, and where it came from."""
  config: ml_collections.ConfigDict
  model_cfg: ModelConfig
  graphdef: Any
  params: nnx.State
  params_sharding: Any
  mesh: jax.sharding.Mesh
  step: int
  workdir: str
  checkpoint_dir: str

  @property
  def model(self) -> HNetLM:
    return nnx.merge(self.graphdef, self.params)

  @property
  def batch_sharding(self) -> NamedSharding:
    return sharding.batch_sharding(self.mesh)

  def batch_size(self, rows: int) -> int:
    """`rows` rounded up to a multiple of the data-parallel size."""
    return sharding.round_up_batch(rows, self.mesh.shape)


# ---------------------------------------------------------------------------------------------
# Where the checkpoint is
# ---------------------------------------------------------------------------------------------
def resolve(workdir: str | None = None, checkpoint: str | None = None, step: int | None = None
            ) -> tuple[str, str, int]:
  """(workdir, checkpoints directory, step) for a workdir or a checkpoint path, checked to exist."""
  if checkpoint:
    path = storage.resolve(checkpoint.rstrip("/"))
    if not storage.path(path).is_dir():
      raise FileNotFoundError(f"checkpoint {checkpoint!r} does not exist")
    name = os.path.basename(path)
    if name.isdigit():  # <workdir>/checkpoints/<step>
      if step is not None and step != int(name):
        raise ValueError(f"--step={step} contradicts the checkpoint path {checkpoint!r}")
      ckpt_dir, step = os.path.dirname(path), int(name)
    else:  # <workdir>/checkpoints
      ckpt_dir = path
    workdir = os.path.dirname(ckpt_dir)
  else:
    if not workdir:
      raise ValueError("give --workdir (a train.py work dir) or --checkpoint (<workdir>/checkpoints[/<step>])")
    workdir = storage.resolve(workdir)
    if not storage.path(workdir).is_dir():
      raise FileNotFoundError(f"workdir {workdir} does not exist")
    ckpt_dir = os.path.join(workdir, "checkpoints")
  steps = _steps(ckpt_dir)
  if not steps:
    raise FileNotFoundError(f"no checkpoint under {ckpt_dir} (train first: python train.py --workdir {workdir})")
  if step is None:
    step = steps[-1]
  elif step not in steps:
    raise FileNotFoundError(f"no checkpoint for step {step} under {ckpt_dir} (steps: {steps})")
  return workdir, ckpt_dir, step


def _steps(ckpt_dir: str) -> list[int]:
  """Steps with a finished checkpoint (orbax writes commit_success.txt / drops tmp dirs)."""
  where = storage.path(ckpt_dir)
  if not where.is_dir():
    return []
  return sorted(int(d.name) for d in where.iterdir() if d.name.isdigit() and d.is_dir())


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------
def read_config(ckpt: Checkpointer, workdir: str, step: int) -> dict:
  """The config saved with the checkpoint, else `<workdir>/config.json`."""
  try:
    return ckpt.restore_config(step)
  except Exception as e:  # pylint: disable=broad-except  (older checkpoints carry no config item)
    path = os.path.join(workdir, "config.json")
    if not storage.path(path).exists():
      raise FileNotFoundError(f"checkpoint step {step} under {ckpt.directory} holds no config "
                              f"({type(e).__name__}) and {path} does not exist") from None
    with storage.open_file(path) as f:
      return json.load(f)


# ---------------------------------------------------------------------------------------------
# Restore
# ---------------------------------------------------------------------------------------------
def load(workdir: str | None = None, *, checkpoint: str | None = None, step: int | None = None,
         overrides: dict | None = None, devices: Sequence[jax.Device] | None = None) -> Loaded:
  """Restores the parameters of a train.py checkpoint onto a mesh over `devices` (default: all local)."""
  workdir, ckpt_dir, step = resolve(workdir, checkpoint, step)
  ckpt = Checkpointer(ckpt_dir, async_save=False)
  try:
    c = merge_config(read_config(ckpt, workdir, step), overrides, default_config())
    model_cfg = model_config_from_dict(c.model)
    mesh = sharding.make_mesh(devices=devices if devices is not None else jax.local_devices())
    abstract = nnx.eval_shape(lambda: HNetLM(model_cfg, rngs=nnx.Rngs(params=0)))
    graphdef, abstract_params, _ = nnx.split(abstract, nnx.Param, ...)
    params_sharding = sharding.param_shardings(abstract_params, mesh)
    target = jax.tree.map(lambda v, s: v.replace(jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s)),
                          abstract_params, params_sharding, is_leaf=lambda x: isinstance(x, nnx.Variable))
    params, _ = ckpt.restore_params(target, step)
  finally:
    ckpt.close()
  log.info("restored step %d from %s onto %d device(s)", step, ckpt_dir, mesh.size)
  return Loaded(c, model_cfg, graphdef, params, params_sharding, mesh, step, workdir, ckpt_dir)
