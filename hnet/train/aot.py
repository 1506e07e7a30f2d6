"""Will it fit? The exact training step compiled ahead of time for a TPU slice or NVIDIA GPUs, from a CPU host.

`python train.py --config ... --aot v5p-64` builds the train step that `train.py` would run
(same model, optimizer, mesh, shardings, donation), lowers it against the target's devices
(`hnet.train.accelerators`) and reads XLA's per-device memory analysis, as MaxText's `train_compile.py`
does. Nothing runs and no parameters are allocated: every input is a `ShapeDtypeStruct`.

Memory per device = arguments (parameters, optimizer state, batch) + outputs not aliased to the
donated state + temporaries, or XLA's peak of live buffers where the backend reports one (TPU),
whichever is larger, + generated code. That is XLA's static allocation plan: what the step needs
at its peak, before any allocator fragmentation.
"""
# pylint: disable=invalid-name
import dataclasses
import functools
import logging
import math
import re
import time

import jax

from hnet import sharding
from hnet.config import model_config_from_dict
from hnet.model.flops import flops_per_byte
from hnet.train import accelerators, trainer

log = logging.getLogger(__name__)
GB = 1e9


@dataclasses.dataclass
class Report:
  """What `compile_train_step` measured; `fits` is the verdict."""
  target: accelerators.Target
  mesh: dict
  batch_size: int
  grad_accum_steps: int
  seq_len: int
  num_params: int
  remat: str
  argument_bytes: int
  output_bytes: int
  alias_bytes: int
  temp_bytes: int
  peak_bytes: int  # XLA's own peak of live buffers where the backend reports it (TPU), else 0
  code_bytes: int
  compile_seconds: float
  model_flops: float  # per step, 3 x forward (hnet/model/flops.py)
  xla_flops: float | None  # XLA's count, None where the backend has no cost model
  xla_seconds: float | None  # XLA's estimated step time where valid (loop-free program)
  has_loops: bool
  compiler_options: dict = dataclasses.field(default_factory=dict)  # what a fallback changed
  kernels: list = dataclasses.field(default_factory=list)  # Pallas kernels in the program (splash, SSD)
  note: str = ""  # e.g. the compiler's out-of-memory refusal, whose figure stands in for the temporaries
  dcn: dict = dataclasses.field(default_factory=dict)  # collectives between slices: kind -> {count, bytes}

  @property
  def total_bytes(self) -> int:
    return _plan_total(self.argument_bytes, self.output_bytes, self.alias_bytes, self.temp_bytes, self.peak_bytes,
                       self.code_bytes)

  @property
  def fixed_bytes(self) -> int:
    """Memory that does not grow with the rows per device: parameters, optimizer state, code."""
    return self.argument_bytes + self.output_bytes - self.alias_bytes + self.code_bytes

  @property
  def fits(self) -> bool:
    return self.total_bytes <= self.target.usable_bytes

  @property
  def rows_per_device(self) -> int:
    return self.batch_size // sharding.data_parallel_size(self.mesh)

  def to_json(self) -> dict:
    out = {k: v for k, v in dataclasses.asdict(self).items() if k != "target"}
    out.update(target=self.target.name, devices=self.target.num_devices, platform=self.target.platform,
               memory_bytes=self.target.memory_bytes, usable_bytes=self.target.usable_bytes,
               total_bytes=self.total_bytes, fits=self.fits)
    return out


def compile_train_step(c, target: accelerators.Target, devices: list | None = None) -> Report:
  """Compiles `c`'s training step for `target` and measures it (raises ValueError for a bad config)."""
  devices = devices if devices is not None else accelerators.devices(target)
  model_cfg = model_config_from_dict(c.model)
  mesh = sharding.mesh_of_config(c.mesh, devices)
  trainer.check_batch_divides(c, mesh)

  t0 = time.perf_counter()
  step, state, batch, num_params = trainer.abstract_train_step(c, model_cfg, mesh)
  report = functools.partial(
      Report, target=target, mesh=dict(mesh.shape), batch_size=c.train.batch_size,
      grad_accum_steps=c.train.grad_accum_steps, seq_len=c.data.seq_len, num_params=num_params, remat=c.model.remat,
      model_flops=3 * flops_per_byte(model_cfg, c.data.seq_len, train=True) * c.train.batch_size * c.data.seq_len)
  with jax.set_mesh(mesh):
    lowered = step.lower(state, batch)
    compiler_options = {}
    try:
      compiled = lowered.compile()
    except jax.errors.JaxRuntimeError as e:
      required = _out_of_memory(str(e))
      if required is not None:  # the TPU compiler refuses a program whose temporaries exceed HBM
        state_bytes, batch_bytes = _bytes_per_device(state), _bytes_per_device(batch)
        return report(
            argument_bytes=state_bytes + batch_bytes, output_bytes=state_bytes, alias_bytes=state_bytes,
            temp_bytes=required, peak_bytes=0, code_bytes=0, compile_seconds=time.perf_counter() - t0,
            xla_flops=None, xla_seconds=None, has_loops=True,
            note=f"XLA refused to compile: {str(e).strip().splitlines()[0][:240]}")
      if target.platform != "cuda" or "tile sizes" not in str(e):
        raise
      # Without autotuning, XLA's Triton GEMM emitter can pick no valid tiling for some shapes
      # (seen at hnet_1stage_L, batch 32); cuBLAS takes those matmuls, as autotuning would fall back to.
      log.warning("XLA's Triton GEMM found no tiling without autotuning; compiling with cuBLAS matmuls")
      compiler_options = {"xla_gpu_enable_triton_gemm": False}
      compiled = lowered.compile(compiler_options)
  compile_seconds = time.perf_counter() - t0

  mem = compiled.memory_analysis()
  cost = _cost_analysis(compiled)
  hlo = compiled.as_text()
  has_loops = " while(" in hlo
  xla_seconds = cost.get("optimal_seconds") if cost and not has_loops else None
  return report(
      argument_bytes=mem.argument_size_in_bytes, output_bytes=mem.output_size_in_bytes,
      alias_bytes=mem.alias_size_in_bytes, temp_bytes=mem.temp_size_in_bytes,
      peak_bytes=getattr(mem, "peak_memory_in_bytes", 0) or 0,
      code_bytes=mem.generated_code_size_in_bytes, compile_seconds=compile_seconds,
      xla_flops=cost.get("flops") if cost else None, xla_seconds=xla_seconds, has_loops=has_loops,
      compiler_options=compiler_options, kernels=pallas_kernels(hlo), dcn=dcn_collectives(hlo))


_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def _out_of_memory(message: str) -> int | None:
  """Bytes of temporaries from the TPU compiler's refusal ('... HLO temporaries (389.82G) exceeds ...')."""
  m = re.search(r"memory required for HLO temporaries \(([\d.]+)([KMGT])\)", message)
  if "RESOURCE_EXHAUSTED" not in message or not m:
    return None
  return int(float(m[1]) * _UNITS[m[2]])


def _bytes_per_device(tree) -> int:
  """Bytes of one device's shards of abstract arrays with shardings."""
  return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def _plan_total(argument: int, output: int, alias: int, temp: int, peak: int, code: int) -> int:
  """Memory per device (module docstring): live buffers or XLA's reported peak, whichever is larger, + code."""
  return max(argument + output - alias + temp, peak) + code


def planned_bytes(mem) -> int:
  """Bytes per device of XLA's allocation plan (`compiled.memory_analysis()`), as `Report.total_bytes`."""
  return _plan_total(mem.argument_size_in_bytes, mem.output_size_in_bytes, mem.alias_size_in_bytes,
                     mem.temp_size_in_bytes, getattr(mem, "peak_memory_in_bytes", 0) or 0,
                     mem.generated_code_size_in_bytes)


def cudnn_attention_calls(hlo_text: str) -> int:
  """cuDNN fused-attention custom calls in a compiled GPU program (0: attention runs as XLA ops)."""
  return len(re.findall(r'custom_call_target="__cudnn\$fmha', hlo_text))


def pallas_kernels(hlo_text: str) -> list[str]:
  """Names of the Pallas kernels (Mosaic or Triton custom calls) in a compiled program's text."""
  names = set()
  for line in hlo_text.splitlines():
    if "custom-call(" in line and re.search(r'custom_call_target="(tpu_custom_call|__gpu\$xla\.gpu\.triton)"', line):
      names.add(re.match(r"\s*(?:ROOT )?%?([\w-]+)", line).group(1))
  return sorted(names)


_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
                "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8}


def dcn_collectives(hlo_text: str) -> dict:
  """Collectives between slices in a compiled multi-slice TPU program: kind -> {count: ops in the program,
  in_loops: those inside loop bodies, bytes: bytes per device and step, each op's shape times the known
  trip counts of the loops around it}.

  The TPU compiler keeps the collectives inside a slice as all-reduce/all-gather/... with slice-local replica
  groups and turns the parts that cross DCN into host transfers to the Megascale runtime: `send` ops tagged
  `_xla_megascale_transfer_type` (ALL_REDUCE, ALL_GATHER, ...). Those are counted here.
  """
  sends, loops, computation = [], {}, ""  # loops: body computation -> (trip count, computation holding the loop)
  conditions, constants = {}, {}  # condition computation -> its bound's name; s32 constants by name
  for line in hlo_text.splitlines():
    if header := re.match(r"(?:ENTRY )?%([\w.-]+) \(", line):  # attribute text may span lines: match headers only
      computation = header[1]
    if body := re.search(r"\swhile\(.*condition=%([\w.-]+).*body=%([\w.-]+)", line):
      trips = re.search(r'"known_trip_count":\{"n":"(\d+)"', line)
      loops[body[2]] = (int(trips[1]) if trips else body[1], computation)
    if bound := re.search(r"ROOT .*= pred\[\]\S* compare\(%[\w.-]+, %([\w.-]+)\), direction=LT", line):
      conditions[computation] = bound[1]  # a scan's condition: counter < N
    if const := re.search(r"%([\w.-]+) = s32\[\]\S* constant\((\d+)\)", line):
      constants[const[1]] = int(const[2])
    kind = re.search(r'_xla_megascale_transfer_type="(\w+)"', line)
    if kind and re.search(r"\)\s+send\(", line):
      dtype, dims = re.search(r"=\s*\(([a-z]\w*)\[([\d,]*)\]", line).groups()
      size = math.prod(int(d) for d in dims.split(",") if d) * _DTYPE_BYTES.get(dtype, 4)
      sends.append((kind[1].lower().replace("_", "-"), size, computation))
  out = {}
  for kind, size, where in sends:
    runs, inside = 1, where in loops
    while where in loops:
      trips, where = loops[where]
      # The compiler keeps no trip count on TPU loops: it is the condition's bound (a scan's counter starts at 0).
      runs *= trips if isinstance(trips, int) else constants.get(conditions.get(trips), 1)
    entry = out.setdefault(kind, {"count": 0, "in_loops": 0, "bytes": 0})
    entry["count"] += 1
    entry["in_loops"] += inside
    entry["bytes"] += size * runs
  return out


def _cost_analysis(compiled) -> dict | None:
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except  (backends without a cost model raise or return None)
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return dict(cost) if cost else None


def advice(r: Report) -> str:
  """One line: the first change that should make the step fit."""
  have = r.target.usable_bytes
  dp = sharding.data_parallel_size(r.mesh)
  slices = r.target.num_slices  # data parallel over slices (mesh.dcn_data) is not a replication to shard away
  if r.mesh["data"] > slices and r.mesh["fsdp"] < r.target.num_devices // slices // r.mesh["tensor"]:
    return ("shard parameters and optimizer state over every chip: --config.mesh.fsdp=-1 --config.mesh.data=1 "
            f"(now replicated {r.mesh['data']} times)")
  if r.remat != "full":
    return f"recompute activations in the backward pass: --config.model.remat=full (now {r.remat!r})"
  fixed = r.fixed_bytes
  micro_rows = r.rows_per_device // r.grad_accum_steps
  per_row = (r.total_bytes - fixed) / max(micro_rows, 1)  # activations scale with the micro-batch rows on a device
  rows = int((have - fixed) // per_row) if have > fixed else 0
  if rows >= 1:
    rows = 2 ** int(math.log2(rows))
    accum = r.grad_accum_steps * -(-micro_rows // rows)
    return (f"about {rows} rows per device fit ({micro_rows} now): keep the global batch with "
            f"--config.train.grad_accum_steps={accum}, or use --config.train.batch_size={rows * dp}")
  if have > fixed:
    return (f"one row per device needs {(r.total_bytes - fixed) / micro_rows / GB:.1f} GB of activations beside "
            f"{fixed / GB:.1f} GB of state: use more chips, or shorter rows (--config.data.seq_len)")
  return (f"parameters and optimizer state alone need {fixed / GB:.1f} GB of the {have / GB:.1f} GB per device: "
          "use more chips (a larger slice, --config.mesh.fsdp=-1 --config.mesh.data=1)")


def format_report(r: Report, config_name: str = "") -> str:
  t = r.target
  m = r.mesh
  lines = [
      f"ahead-of-time train step{' of ' + config_name if config_name else ''} for {t.description}",
      f"  mesh data={m['data']} fsdp={m['fsdp']} tensor={m['tensor']}; batch {r.batch_size} x {r.seq_len} bytes "
      f"({r.rows_per_device} rows per device, grad_accum_steps={r.grad_accum_steps}); {r.num_params / 1e6:,.1f}M "
      f"parameters; remat={r.remat}",
      f"  per device: arguments {r.argument_bytes / GB:.2f} GB (parameters, optimizer state, batch), "
      f"temporaries {r.temp_bytes / GB:.2f} GB, "
      + (f"peak of live buffers {r.peak_bytes / GB:.2f} GB, " if r.peak_bytes else "")
      + f"outputs {r.output_bytes / GB:.2f} GB "
      f"({r.alias_bytes / GB:.2f} GB of them in the donated inputs), code {r.code_bytes / GB:.2f} GB",
      f"  total {r.total_bytes / GB:.2f} GB of {t.usable_bytes / GB:.1f} GB usable "
      f"({t.memory_bytes / GB:.1f} GB device"
      + (f", XLA_PYTHON_CLIENT_MEM_FRACTION={t.usable_bytes / t.memory_bytes:.2f}" if t.platform == "cuda" else "")
      + f"): {'fits' if r.fits else 'DOES NOT FIT'} ({100 * r.total_bytes / t.usable_bytes:.0f}%)",
      f"  FLOPs per step: {r.model_flops:.3g} by the model's count (3 x forward, hnet/model/flops.py); XLA's count: "
      + (f"{r.xla_flops:.3g}" + (" (loop bodies counted once)" if r.has_loops else "")
         if r.xla_flops is not None else "none (no cost model for this backend)"),
      f"  step time: at least {r.model_flops / (t.peak_flops * t.num_devices):.3g} s at the "
      f"{t.peak_flops / 1e12:.0f} TFLOP/s peak per device; XLA's estimate: "
      + (f"{r.xla_seconds:.3g} s" if r.xla_seconds is not None else
         "none (no cost model for this backend)" if r.xla_flops is None
         else "not valid (the step has loops: scanned layers, gradient accumulation)"),
      f"  Pallas kernels: {', '.join(r.kernels) or 'none'}",
      *([f"  collectives over DCN between the {t.num_slices} slices: "
         + (", ".join(f"{v['count']} {k} ops" + (f" ({v['in_loops']} in loop bodies)" if v["in_loops"] else "")
                      + f", {v['bytes'] / 1e6:,.1f} MB per device and step" for k, v in sorted(r.dcn.items()))
            or "none")]
        if t.num_slices > 1 else []),
      *([f"  note: {r.note}"] if r.note else []),
      f"  compile: {r.compile_seconds:.0f} s"
      + (f" (with {', '.join(f'{k}={v}' for k, v in r.compiler_options.items())})" if r.compiler_options else ""),
  ]
  if not r.fits:
    lines.append(f"advice: {advice(r)}")
  return "\n".join(lines)

