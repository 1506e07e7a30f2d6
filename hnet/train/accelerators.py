"""Accelerator targets by the names users know (`v5p-64`, `h100x8`), as devices this CPU host can compile for.

TPU slices come from libtpu's topology descriptions (`pip install "jax[tpu]"`), NVIDIA GPUs from
jax's CUDA plugin (`pip install -e ".[cuda]"`) with an XLA GPU target config kept in
`hnet/train/gpu_targets/*.txtpb`. Neither needs the hardware: `jax.jit(...).lower(...).compile()` against
these devices is an ahead-of-time compile for the real chip. The same peak FLOP/s table gives
training's MFU (`device_peak_flops`, by the device kind jax reports).

TPU names follow Cloud TPU: `v4-N` and `v5p-N` count TensorCores (two per chip), `v5e-N`
and `v6e-N` count chips. `KxNAME` (`2xv5p-128`) is K such slices joined by the data-centre network (DCN).
"""
import dataclasses
import math
import os
import re

import jax

_TARGET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpu_targets")
GiB = 2**30


@dataclasses.dataclass(frozen=True)
class TpuGeneration:
  topology_prefix: str  # libtpu's generation name in topology strings
  cores_per_chip: int  # what the N of `v5p-N` counts
  dims: int  # 3-D torus (v4, v5p) or 2-D (v5e, v6e)
  hbm_bytes: int  # per chip
  peak_flops: float  # dense bf16 per chip


TPU_GENERATIONS = {
    "v4": TpuGeneration("v4", 2, 3, 32 * GiB, 275e12),
    "v5p": TpuGeneration("v5p", 2, 3, 95 * GiB, 459e12),
    "v5e": TpuGeneration("v5e", 1, 2, 16 * GiB, 197e12),
    "v6e": TpuGeneration("v6e", 1, 2, 32 * GiB, 918e12),
}


@dataclasses.dataclass(frozen=True)
class GpuModel:
  target_config: str  # file in hnet/train/gpu_targets/
  memory_bytes: int  # device_memory_size of that file
  peak_flops: float  # dense bf16


GPU_MODELS = {
    "h100": GpuModel("h100_sxm.txtpb", 84_942_979_072, 989e12),
    "h200": GpuModel("h200.txtpb", 151_397_597_184, 989e12),
    "a100": GpuModel("a100_sxm_80.txtpb", 85_100_068_864, 312e12),
}
# Dense bf16 peak FLOP/s by the device kind jax reports (`device.device_kind`), for MFU.
PEAK_FLOPS_BY_KIND = {
    "H100": GPU_MODELS["h100"].peak_flops,
    "H200": GPU_MODELS["h200"].peak_flops,
    "A100": GPU_MODELS["a100"].peak_flops,
    "TPU v4": TPU_GENERATIONS["v4"].peak_flops,
    "TPU v5 lite": TPU_GENERATIONS["v5e"].peak_flops,
    "TPU v5e": TPU_GENERATIONS["v5e"].peak_flops,
    "TPU v5p": TPU_GENERATIONS["v5p"].peak_flops,
    "TPU v6 lite": TPU_GENERATIONS["v6e"].peak_flops,
}
GPU_MEMORY_FRACTION = 0.95  # train.py sets XLA_PYTHON_CLIENT_MEM_FRACTION to this unless the user did


def device_peak_flops(device: jax.Device | None = None) -> tuple[float | None, str]:
  """(peak FLOP/s, device kind) for MFU; None where the peak is unknown (e.g. CPU)."""
  device = device or jax.devices()[0]
  kind = getattr(device, "device_kind", str(device))
  for name, peak in PEAK_FLOPS_BY_KIND.items():  # unknown devices (CPU) report no MFU
    if name.lower() in kind.lower():
      return peak, kind
  return None, kind


@dataclasses.dataclass(frozen=True)
class Target:
  name: str  # as the user wrote it
  platform: str  # 'tpu' or 'cuda'
  num_devices: int
  memory_bytes: int  # per device
  usable_bytes: int  # what a training step may occupy per device
  peak_flops: float  # per device
  topology: str  # libtpu topology name, or the CUDA plugin's slices x hosts x devices
  target_config: str = ""  # GPU: path of the XLA target config
  num_slices: int = 1  # TPU slices over DCN, each of `topology`

  @property
  def description(self) -> str:
    what = ("chip" if self.platform == "tpu" else "GPU") + ("s" if self.num_devices > 1 else "")
    slices = f"{self.num_slices} slices of " if self.num_slices > 1 else ""
    return (f"{self.name}: {self.num_devices} {what} ({slices}{self.topology}), "
            f"{self.memory_bytes / 1e9:.1f} GB each")


def torus_shape(chips: int, dims: int) -> tuple[int, ...]:
  """Cloud TPU slice shapes: double the last of the smallest sides (v5p-8 = 2x2x1, v5p-64 = 2x4x4)."""
  if chips < 1 or chips & (chips - 1) or chips == 2 or (dims == 3 and chips < 4):
    smallest = "1, 4, 8, 16, ..." if dims == 2 else "4, 8, 16, ..."
    raise ValueError(f"{chips} chips is not a slice this tool knows: use a power of two ({smallest} chips)")
  if chips == 1:
    return (1,) * dims
  shape = [2, 2] if dims == 2 else [2, 2, 1]
  while math.prod(shape) < chips:
    i = max(j for j, side in enumerate(shape) if side == min(shape))
    shape[i] *= 2
  return tuple(shape)


def parse(name: str) -> Target:
  """`v5p-64`, `2xv5p-128`, `v5e-16`, `v4-8`, `v6e-8`, `h100`, `h100x8`, `h200x4`, `a100` -> Target."""
  fraction = float(os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", GPU_MEMORY_FRACTION))
  m = re.fullmatch(r"(?:(\d+)x)?(v4|v5p|v5e|v5litepod|v6e)-(\d+)", name.strip().lower())
  if m:
    gen = TPU_GENERATIONS["v5e" if m[2] == "v5litepod" else m[2]]
    slices, cores = int(m[1] or 1), int(m[3])
    if slices < 1:
      raise ValueError(f"--aot {name}: the number of slices (K in KxNAME) must be at least 1")
    if cores % gen.cores_per_chip:
      raise ValueError(f"--aot {name}: {m[2]}-N counts TensorCores, {gen.cores_per_chip} per chip")
    chips = cores // gen.cores_per_chip
    shape = torus_shape(chips, gen.dims)
    topology = f"{gen.topology_prefix}:{'x'.join(map(str, shape))}"
    return Target(name, "tpu", chips * slices, gen.hbm_bytes, gen.hbm_bytes, gen.peak_flops, topology,
                  num_slices=slices)
  m = re.fullmatch(r"(h100|h200|a100)(?:x(\d+))?", name.strip().lower())
  if m:
    gpu, count = GPU_MODELS[m[1]], int(m[2] or 1)
    if count < 1 or count > 8:
      raise ValueError(f"--aot {name}: 1 to 8 GPUs of one host (multi-host GPU targets are not modelled)")
    return Target(name, "cuda", count, gpu.memory_bytes, int(gpu.memory_bytes * fraction), gpu.peak_flops,
                  f"1x1x{count}", os.path.join(_TARGET_DIR, gpu.target_config))
  known = "v4-N, v5p-N, v5e-N, v6e-N (e.g. v5p-64; 2xv5p-128 for two slices), h100, h100x8, h200, a100 (xN for N GPUs)"
  raise ValueError(f"--aot {name!r}: unknown target; use one of {known}")


def devices(target: Target) -> list:
  """The target's devices, described by the platform plugin: compile for them, never run on them."""
  found = tpu_devices(target.topology, target.num_slices) if target.platform == "tpu" else _gpu_devices(target)
  if len(found) != target.num_devices:
    raise RuntimeError(f"--aot {target.name}: the topology {target.topology!r} has {len(found)} devices, "
                       f"expected {target.num_devices}")
  return found


_ONE_HOST_TYPE = {"v4": "v4-8", "v5p": "v5p-8", "v5e": "v5litepod-8", "v6e": "v6e-8"}  # libtpu's type names


def _host_has_tpus() -> bool:
  from jax._src import hardware_utils  # pylint: disable=import-outside-toplevel  (what jax itself asks)
  return hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0


def quiet_libtpu(accelerator_type: str = "v4-8") -> None:
  """On a host without TPUs, before libtpu loads: name a one-host slice and its worker for it.

  libtpu (installed by `.[test]`) loads when a program with a TPU branch is lowered (the splash and
  Pallas kernels' `platform_dependent`) or a topology is described; it then asks for this host's
  TPU type and workers and, finding neither, prints 6 lines of warnings and an `E0000
  INVALID_ARGUMENT`. Neither is needed there. A TPU host keeps its own settings.
  """
  if not _host_has_tpus():
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", accelerator_type)


def tpu_devices(topology: str, num_slices: int = 1) -> list:
  """Devices of `num_slices` slices of a libtpu topology such as 'v5p:2x2x1' (each device has its slice_index)."""
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  # Only a description is loaded, no chip is claimed: several compiling processes may share libtpu,
  # and there is no TPU metadata server to ask.
  for key in ("ALLOW_MULTIPLE_LIBTPU_LOAD", "TPU_SKIP_MDS_QUERY"):
    os.environ.setdefault(key, "1")
  quiet_libtpu(_ONE_HOST_TYPE.get(topology.split(":")[0], "v4-8"))
  try:
    return list(topologies.get_topology_desc(topology, platform="tpu", num_slices=num_slices).devices)
  except Exception as e:  # pylint: disable=broad-except
    raise RuntimeError(f"no TPU topology {topology!r} ({_first_line(e)}); TPU targets need libtpu: "
                       f"pip install \"jax[tpu]=={jax.__version__}\"") from None


def _gpu_devices(target: Target) -> list:
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  with open(target.target_config, encoding="utf-8") as f:
    config = f.read()
  try:
    desc = topologies.get_topology_desc(target.name, "cuda", target_config=config, topology=target.topology)
  except Exception as e:  # pylint: disable=broad-except
    raise RuntimeError(f"--aot {target.name}: no CUDA compiler ({_first_line(e)}); NVIDIA targets need jax's "
                       "CUDA plugin (pip install -e \".[cuda]\") and accelerators.prepare_gpu_compiles() before "
                       "jax starts") from None
  return list(desc.devices)


def prepare_gpu_compiles() -> None:
  """Before jax starts its backends: settings for deviceless CUDA compiles.

  XLA cannot autotune kernels without a GPU to time them on; and the CUDA plugin checks the
  driver when CUDA is among the platforms to start, which fails on a host without one, so this
  process runs on the CPU (it only compiles) unless the user chose its platforms.
  """
  flags = os.environ.get("XLA_FLAGS", "")
  if "--xla_gpu_autotune_level" not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} --xla_gpu_autotune_level=0".strip()
  if not jax.config.jax_platforms:
    jax.config.update("jax_platforms", "cpu")


def _first_line(e: Exception) -> str:
  return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
