"""Mesh construction, logical-axis rules, sharding helpers and batch placement (the one place mesh axes are named).

Parameters carry logical axis names (`embed`, `heads`, `mlp`, ...) in their metadata;
`LOGICAL_RULES` maps them onto the `data × fsdp × tensor` mesh: FSDP shards the model
width, tensor parallelism the heads / MLP / SSM inner width, and the batch is split
over `data × fsdp`. The sequence axis is never sharded (routing is per sequence).

Several slices (TPU slices joined by the data-centre network, DCN; GPU hosts) fold into the same
three axes, as MaxText's `dcn_*_parallelism` do: `mesh.dcn_data` slices multiply the `data` axis
(its outer part runs over DCN), `mesh.dcn_fsdp` the `fsdp` axis. Every PartitionSpec and the batch
placement are unchanged; only which device sits where in the mesh differs.
"""
# pylint: disable=invalid-name
from typing import Sequence

import jax
import numpy as np
from flax import nnx
from jax.experimental import mesh_utils
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from hnet.data.batch import BATCH_DTYPES

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

LOGICAL_RULES = (
    ("batch", BATCH_AXES),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("ssm_inner", "tensor"),
    ("ssm_heads", None),
    ("norm", None),
    ("layers", None),
    ("router", None),
)


def mesh_shape(data: int, fsdp: int, tensor: int, num_devices: int) -> tuple[int, int, int]:
  """Resolves one -1 entry to 'the rest of the devices' and checks the product."""
  sizes = [data, fsdp, tensor]
  if sizes.count(-1) > 1:
    raise ValueError(f"mesh: at most one axis may be -1, got data={data} fsdp={fsdp} tensor={tensor}")
  if any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f"mesh: axis sizes must be positive or -1, got data={data} fsdp={fsdp} tensor={tensor}")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(f"mesh: {num_devices} devices are not divisible by fsdp*tensor*data={known}")
    sizes[sizes.index(-1)] = num_devices // known
  if int(np.prod(sizes)) != num_devices:
    raise ValueError(f"mesh: data*fsdp*tensor={int(np.prod(sizes))} but {num_devices} devices are present")
  return tuple(sizes)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices: Sequence[jax.Device] | None = None,
              dcn_data: int = 1, dcn_fsdp: int = 1) -> jax.sharding.Mesh:
  """The data × fsdp × tensor mesh; with dcn_data × dcn_fsdp slices, data/fsdp/tensor describe one slice."""
  devices = list(devices if devices is not None else jax.devices())
  slices = dcn_data * dcn_fsdp
  found = num_slices(devices)
  if found is not None and slices != found:
    raise ValueError(f"mesh: the devices span {found} slices but mesh.dcn_data*dcn_fsdp={slices}: "
                     f"set --config.mesh.dcn_data={found} (data parallel over the slices)")
  if len(devices) % slices:
    raise ValueError(f"mesh: {len(devices)} devices are not divisible into mesh.dcn_data*dcn_fsdp={slices} slices")
  per_slice = len(devices) // slices
  try:
    shape = mesh_shape(data, fsdp, tensor, per_slice)
  except ValueError as e:
    raise ValueError(f"{e}{f' (per slice, of {slices} slices)' if slices > 1 else ''}") from None
  axis_types = (AxisType.Auto,) * 3
  if slices == 1:
    return jax.make_mesh(shape, MESH_AXES, axis_types=axis_types, devices=devices)
  dcn = (dcn_data, dcn_fsdp, 1)
  if found is not None:  # TPU slices: each slice's mesh follows its torus, slices side by side over DCN
    grid = mesh_utils.create_hybrid_device_mesh(shape, dcn, devices, allow_split_physical_axes=True)
  else:  # no slice index (CPU, GPU): consecutive devices form a slice, as processes list theirs
    grid = hybrid_grid(np.array(devices, dtype=object), shape, dcn)
  return jax.sharding.Mesh(grid, MESH_AXES, axis_types=axis_types)


def mesh_of_config(m, devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """The mesh a config's `mesh` section describes (configs/base.py), over `devices` (default: all)."""
  return make_mesh(m.data, m.fsdp, m.tensor, devices, dcn_data=m.dcn_data, dcn_fsdp=m.dcn_fsdp)


def num_slices(devices: Sequence[jax.Device]) -> int | None:
  """Slices TPU devices span (by their `slice_index`); None for devices that have none (CPU, GPU)."""
  if any(d.platform != "tpu" or getattr(d, "slice_index", None) is None for d in devices):
    return None
  return len({d.slice_index for d in devices})


def hybrid_grid(devices: np.ndarray, slice_shape: Sequence[int], dcn_shape: Sequence[int]) -> np.ndarray:
  """Devices (slice after slice, each slice in its mesh order) laid out as `create_hybrid_device_mesh` does:
  axis i has size dcn_shape[i] * slice_shape[i], its outer part indexing the slice."""
  n = len(slice_shape)
  grid = devices.reshape(*dcn_shape, *slice_shape)  # (dcn axes, slice axes)
  grid = grid.transpose([a for i in range(n) for a in (i, n + i)])  # interleave: (dcn_0, ici_0, dcn_1, ici_1, ...)
  return grid.reshape([d * s for d, s in zip(dcn_shape, slice_shape)])


def logical_to_mesh(names: Sequence[str | None] | None) -> P:
  rules = dict(LOGICAL_RULES)
  if names is None:
    return P()
  return P(*(rules.get(n) if n is not None else None for n in names))


def param_shardings(state: nnx.State, mesh: jax.sharding.Mesh) -> nnx.State:
  """NamedSharding per variable from its logical `out_sharding` metadata (replicated if absent).

  A mesh axis that does not divide the dimension is dropped for that dimension, so
  small models still shard on big meshes.
  """
  def one(var):
    names = var.get_metadata().get("out_sharding") if hasattr(var, "get_metadata") else None
    spec = list(logical_to_mesh(names)) if names else []
    shape = tuple(var.get_value().shape) if isinstance(var, nnx.Variable) else np.shape(var)
    spec = spec + [None] * (len(shape) - len(spec))
    for i, axes in enumerate(spec):
      if axes is None:
        continue
      size = int(np.prod([mesh.shape[a] for a in (axes if isinstance(axes, tuple) else (axes,))]))
      if shape[i] % size:
        spec[i] = None
    return NamedSharding(mesh, P(*spec))

  return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def data_parallel_size(mesh_shape) -> int:
  """Ways the batch is split: data × fsdp, of a mesh's `shape` (or the same as a dict)."""
  return mesh_shape["data"] * mesh_shape["fsdp"]


def round_up_batch(rows: int, mesh_shape) -> int:
  """`rows` (at least 1) rounded up to a multiple of the data-parallel size: an evaluation batch every
  device gets a share of (the padded rows are masked)."""
  dp = data_parallel_size(mesh_shape)
  return -(-max(rows, 1) // dp) * dp


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Batch rows over data × fsdp; the sequence axis stays whole on each device."""
  return NamedSharding(mesh, P(BATCH_AXES))


def to_global(batch_np: dict, batch_sharding: NamedSharding) -> dict:
  """Process-local numpy batch -> global jax arrays sharded over data × fsdp (the keys of hnet/data/batch.py)."""
  return {k: jax.make_array_from_process_local_data(batch_sharding, np.asarray(batch_np[k]).astype(dtype))
          for k, dtype in BATCH_DTYPES.items()}


def abstract_batch(batch_size: int, seq_len: int, mesh: jax.sharding.Mesh) -> dict:
  """Shapes, dtypes and shardings of one global batch (as `to_global` builds it), for ahead-of-time compiles."""
  rows = batch_sharding(mesh)
  return {k: jax.ShapeDtypeStruct((batch_size, seq_len), dtype, sharding=rows) for k, dtype in BATCH_DTYPES.items()}


def abstract_with_shardings(tree, shardings):
  """ShapeDtypeStructs of `tree`'s leaves carrying `shardings`: a target to compile for or restore into."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def constrain_batch(x: jax.Array) -> jax.Array:
  """Pins an activation's batch axis to data × fsdp when a mesh is active (no-op otherwise)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or not set(BATCH_AXES) <= set(mesh.axis_names):
    return x
  batch = int(np.prod([mesh.shape[a] for a in BATCH_AXES]))
  if x.shape[0] % batch:
    return x
  return jax.lax.with_sharding_constraint(x, P(BATCH_AXES, *([None] * (x.ndim - 1))))
