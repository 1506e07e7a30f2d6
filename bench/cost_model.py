"""XLA's cost model for one layer's forward + backward, compiled ahead of time for an accelerator target.

  python -m bench.cost_model                                  # v5p, reference shape, every layer kind
  python -m bench.cost_model --layers mamba2 ssd --chunk 128 256 512 --out bench/results/cost_model_v5p.jsonl
  python -m bench.cost_model --layers ssd mamba2 --ssd_impl pallas   # the Pallas TPU (Mosaic) kernel
  XLA_FLAGS=--xla_gpu_autotune_level=0 python -m bench.cost_model --target h100 --layers ssd mamba2 \
      --ssd_impl pallas --chunk 128                           # the Triton kernel, deviceless (needs jax[cuda12])

Runs on a CPU host, no accelerator: a TPU target comes from libtpu's topology description, `h100`
from jax's CUDA plugin with `hnet/train/gpu_targets/h100_sxm.txtpb`. Each layer kind (the Mamba2 mixer, the
SSD scan alone, attention, SwiGLU) is lowered as `jax.vjp` of its forward with the output standing
in for its cotangent (the backward of a training step, without the loss), on one chip, and
compiled. The script prints XLA's FLOPs, bytes accessed, its estimated time (`optimal_seconds`,
TPU only) and the TFLOP/s and % of peak that implies, on two bases: XLA's FLOP count (the issue's
figure) and the model FLOPs of `hnet/model/flops.py` (3 x forward, unchanged by recomputation). The
estimate covers loop-free programs only (one layer, not a scanned stack) and cannot see inside
Pallas kernels: for `--ssd_impl pallas` the useful output is that the kernels compile (`kernels`
lists the custom calls found in the compiled program). None of these figures is a measured speed.
"""
# pylint: disable=invalid-name
import argparse
import datetime
import json
import os
import subprocess
import time

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from hnet.config import LayerGroup, ModelConfig, StageConfig
from hnet.layers.attention import Attention, attention_mask
from hnet.layers.mamba2 import SSD_IMPLS, Mamba2
from hnet.layers.mlp import SwiGLU
from hnet.model.flops import layer_flops
from hnet.train import accelerators, aot

PEAK_TFLOPS = {"v5p": 459.0, "v5litepod": 197.0, "v6e": 918.0, "v4": 275.0, "h100": 989.0}  # dense bf16 per chip
LAYERS = ("mamba2", "ssd", "attention", "swiglu")


def target_device(target: str):
  """One chip of a TPU topology such as 'v5p:2x2x1' (libtpu's description) or of 'h100' (CUDA plugin).

  No hardware is needed: jax itself stays on the CPU (hnet/train/accelerators.py).
  """
  jax.config.update("jax_platforms", "cpu")
  if target == "h100":
    accelerators.prepare_gpu_compiles()
    return accelerators.devices(accelerators.parse("h100"))[0]
  return accelerators.tpu_devices(target)[0]


def kernels(compiled) -> list[str]:
  """Names of the Pallas kernels (Mosaic or Triton custom calls) in a compiled program."""
  return aot.pallas_kernels(compiled.as_text())


def _abstract(tree, sharding):
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), tree)


def layer_program(kind: str, a: argparse.Namespace, chunk: int):
  """(function, abstract args, forward model FLOPs) for forward + backward of one layer."""
  dtype = jnp.dtype(a.dtype)
  B, L, D = a.batch, a.seq_len, a.d_model
  seg_BL = jax.ShapeDtypeStruct((B, L), jnp.int32)
  x_BLD = jax.ShapeDtypeStruct((B, L, D), dtype)
  st = StageConfig(index=0, d_model=D, d_ff=a.d_ff, num_heads=a.num_heads, rotary_dim=D // a.num_heads // 2,
                   window=-1, encoder=(), main=(LayerGroup("T", 1),), decoder=(), target_ratio=1.0)
  cfg = ModelConfig(stages=(st,), router="none", ssm_d_state=a.d_state, ssm_expand=a.expand,
                    ssm_head_dim=a.head_dim, ssm_chunk_size=chunk)

  if kind == "ssd":
    H, N = a.expand * D // a.head_dim, a.d_state
    args = (jax.ShapeDtypeStruct((B, L, H, a.head_dim), dtype), jax.ShapeDtypeStruct((B, L, H), jnp.float32),
            jax.ShapeDtypeStruct((H,), jnp.float32), jax.ShapeDtypeStruct((B, L, 1, N), dtype),
            jax.ShapeDtypeStruct((B, L, 1, N), dtype), seg_BL)

    def fn(x, dt, A, Bm, Cm, seg):
      f = lambda *xs: SSD_IMPLS[a.ssd_impl](*xs, chunk_size=chunk, segment_ids_BL=seg)  # noqa: E731
      (y, s), vjp = jax.vjp(f, x, dt, A, Bm, Cm)
      return vjp((y, s))  # the outputs stand in for their cotangents: same shapes, no extra inputs
    flops = layer_flops(LayerGroup("m", 1), st, cfg, L)["ssd"] * B * L
    return fn, args, flops

  with nnx.use_eager_sharding(False):
    if kind == "mamba2":
      make = lambda: Mamba2(D, d_state=a.d_state, expand=a.expand, head_dim=a.head_dim, d_conv=4,  # noqa: E731
                            chunk_size=chunk, init_std=0.02, out_init_std=0.02, dtype=dtype,
                            ssd_impl=a.ssd_impl, rngs=nnx.Rngs(0))
      call = lambda m, x, seg: m(x, seg)  # noqa: E731
      group = LayerGroup("m", 1)
    elif kind == "attention":
      make = lambda: Attention(D, a.num_heads, rotary_dim=st.rotary_dim, init_std=0.02,  # noqa: E731
                               out_init_std=0.02, dtype=dtype, rngs=nnx.Rngs(0))
      call = lambda m, x, seg: m(x, jnp.broadcast_to(jnp.arange(L), (B, L)), attention_mask(seg))  # noqa: E731
      group = LayerGroup("t", 1)
    elif kind == "swiglu":
      make = lambda: SwiGLU(D, a.d_ff, init_std=0.02, out_init_std=0.02, dtype=dtype, rngs=nnx.Rngs(0))  # noqa: E731
      call = lambda m, x, seg: m(x)  # noqa: E731
      group = None
    else:
      raise ValueError(f"--layers: unknown layer {kind!r}; choose from {LAYERS}")
    graphdef, params = nnx.split(nnx.eval_shape(make))

  def fn(params, x_BLD, seg_BL):
    f = lambda p, x: call(nnx.merge(graphdef, p), x, seg_BL)  # noqa: E731
    y_BLD, vjp = jax.vjp(f, params, x_BLD)
    return vjp(y_BLD)
  if group is None:
    flops = 6 * D * a.d_ff * B * L
  else:
    flops = sum(layer_flops(group, st, cfg, L).values()) * B * L
  return fn, (params, x_BLD, seg_BL), flops


def measure(kind: str, a: argparse.Namespace, chunk: int, device, peak: float) -> dict:
  """Compiles one layer's forward + backward for `device` and reads XLA's cost and memory analyses."""
  fn, args, model_fwd_flops = layer_program(kind, a, chunk)
  sharding = NamedSharding(Mesh([device], ("chip",)), P())
  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(*_abstract(args, sharding)).compile()
  compile_s = time.perf_counter() - t0
  cost = compiled.cost_analysis() or {}
  cost = cost[0] if isinstance(cost, list) else cost
  mem = compiled.memory_analysis()
  row = {"layer": kind, "chunk": chunk if kind in ("mamba2", "ssd") else None,
         "ssd_impl": a.ssd_impl if kind in ("mamba2", "ssd") else None,
         "compile_s": round(compile_s, 1), "model_tflop": 3 * model_fwd_flops / 1e12,
         "temp_gb": getattr(mem, "temp_size_in_bytes", 0) / 1e9 if mem else None, "kernels": kernels(compiled)}
  seconds = cost.get("optimal_seconds")
  if "flops" in cost:
    row.update(xla_tflop=cost["flops"] / 1e12, gb_accessed=cost.get("bytes accessed", 0.0) / 1e9)
  if seconds and seconds > 0 and not row["kernels"]:  # XLA's estimate leaves Pallas kernels out
    row.update(est_ms=seconds * 1e3, xla_tflops_per_s=row["xla_tflop"] / seconds,
               model_tflops_per_s=row["model_tflop"] / seconds)
    row.update(xla_pct_peak=100 * row["xla_tflops_per_s"] / peak, model_pct_peak=100 * row["model_tflops_per_s"] / peak)
  return row


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--target", default="v5p:2x2x1", help="TPU topology (one chip of it is used) or 'h100'")
  p.add_argument("--layers", nargs="+", default=list(LAYERS), choices=LAYERS)
  p.add_argument("--chunk", nargs="+", type=int, default=[256], help="SSD chunk sizes (mamba2, ssd)")
  p.add_argument("--ssd_impl", default="xla", choices=("xla", "pallas"))
  p.add_argument("--batch", type=int, default=4)
  p.add_argument("--seq_len", type=int, default=8192)
  p.add_argument("--d_model", type=int, default=1024)
  p.add_argument("--expand", type=int, default=2)
  p.add_argument("--head_dim", type=int, default=64)
  p.add_argument("--d_state", type=int, default=128)
  p.add_argument("--d_ff", type=int, default=4096)
  p.add_argument("--num_heads", type=int, default=16)
  p.add_argument("--dtype", default="bfloat16")
  p.add_argument("--out", default=None, help="append one JSON line per row to this file")
  a = p.parse_args()
  generation = a.target.split(":")[0]
  if generation not in PEAK_TFLOPS:
    raise SystemExit(f"--target {a.target!r}: peak unknown; use one of {sorted(PEAK_TFLOPS)}")
  peak = PEAK_TFLOPS[generation]
  device = target_device(a.target)
  shape = {k: getattr(a, k) for k in ("batch", "seq_len", "d_model", "expand", "head_dim", "d_state", "d_ff",
                                      "num_heads", "dtype")}
  commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False,
                          cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or None
  meta = {"date": datetime.date.today().isoformat(), "target": a.target, "device": device.device_kind,
          "peak_tflops": peak, "jax": jax.__version__, "commit": commit,
          "basis": "XLA cost model (AOT compile), not measured", **shape}
  print(f"{a.target} ({device.device_kind}), one chip, peak {peak:.0f} TFLOP/s bf16; jax {jax.__version__}; "
        f"{shape}")
  print(f"{'layer':>9} {'impl':>6} {'chunk':>5} {'XLA TFLOP':>9} {'GB':>7} {'est ms':>7} {'TFLOP/s':>8} {'%peak':>6} "
        f"{'model%':>6} {'temp GB':>7}  kernels")
  for kind in a.layers:
    for chunk in (a.chunk if kind in ("mamba2", "ssd") else [a.chunk[0]]):
      row = measure(kind, a, chunk, device, peak)
      def fmt(k, spec, row=row):
        return format(row[k], spec) if row.get(k) is not None else "-".rjust(int(spec.split(".")[0]))
      print(f"{kind:>9} {row['ssd_impl'] or '':>6} {row['chunk'] or '':>5} {fmt('xla_tflop', '9.3f')} "
            f"{fmt('gb_accessed', '7.1f')} {fmt('est_ms', '7.2f')} {fmt('xla_tflops_per_s', '8.0f')} "
            f"{fmt('xla_pct_peak', '5.0f')}% {fmt('model_pct_peak', '5.0f')}% {fmt('temp_gb', '7.2f')}  "
            f"{' '.join(row['kernels']) or '-'}", flush=True)
      if a.out:
        os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
        with open(a.out, "a", encoding="utf-8") as f:
          f.write(json.dumps({**meta, **row}) + "\n")


if __name__ == "__main__":
  main()
