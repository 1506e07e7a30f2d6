"""Does splash attention lower for TPU? The attention layer's forward + backward, compiled ahead of time.

  python -m bench.splash_aot                       # v5p:2x2x1, head dims 64 and 128, L 8192, global and window 1023
  python -m bench.splash_aot --impl auto xla --out bench/results/splash_aot_v5p.jsonl

Runs on a CPU host: the target is libtpu's description of a TPU topology (`hnet.train.accelerators.tpu_devices`).
The layer runs as in training, under `jax.set_mesh` over all the topology's chips (batch over fsdp, heads
over tensor), so the kernel sits inside `jax.shard_map`; `model.attention_impl` 'auto' or 'splash'
picks the Mosaic kernel at lowering (`jax.lax.platform_dependent`). Each line reports the Pallas kernels
found in the compiled program (`tpu_custom_call`s), the compile time and XLA's temporary memory per chip.
"""
# pylint: disable=invalid-name
import argparse
import datetime
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from bench.cost_model import kernels
from hnet import sharding
from hnet.layers.attention import Attention, layer_mask
from hnet.train import accelerators


def tpu_mesh(target: str, tensor: int = 2) -> Mesh:
  """All chips of a TPU topology as a (data=1, fsdp, tensor) mesh."""
  jax.config.update("jax_platforms", "cpu")
  devices = accelerators.tpu_devices(target)
  shape = (1, len(devices) // tensor, tensor)
  return Mesh(np.asarray(devices).reshape(shape), sharding.MESH_AXES, axis_types=(AxisType.Auto,) * 3)


def compile_attention(mesh: Mesh, *, batch: int, seq_len: int, num_heads: int, head_dim: int, window: int,
                      impl: str, dtype=jnp.bfloat16):
  """Lowers and compiles grad of a loss through one attention layer (params and input) for `mesh`."""
  D = num_heads * head_dim
  with nnx.use_eager_sharding(False):
    layer = Attention(D, num_heads, rotary_dim=head_dim // 2, init_std=0.02, out_init_std=0.02,
                      implementation=impl, dtype=dtype, rngs=nnx.Rngs(params=0))
  graphdef, params = nnx.split(layer)

  def grads(params, x_BLD, seg_BL):
    pos_BL = jnp.broadcast_to(jnp.arange(seq_len), seg_BL.shape)

    def loss(params, x_BLD):
      y_BLD = nnx.merge(graphdef, params)(x_BLD, pos_BL, layer_mask(seg_BL, window, impl))
      return jnp.sum(y_BLD.astype(jnp.float32) ** 2)
    return jax.grad(loss, argnums=(0, 1))(params, x_BLD)

  leaves, treedef = jax.tree.flatten(params)  # one leaf per Variable, in the shardings' order
  shardings = jax.tree.leaves(sharding.param_shardings(params, mesh))
  params = treedef.unflatten([jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s) for a, s in zip(leaves, shardings)])
  rows = NamedSharding(mesh, P(sharding.BATCH_AXES))
  x = jax.ShapeDtypeStruct((batch, seq_len, D), dtype, sharding=rows)
  seg = jax.ShapeDtypeStruct((batch, seq_len), jnp.int32, sharding=rows)
  # Default precision: Mosaic rejects 16-bit matmuls at 'highest' (fp32 contract precision), which tests set.
  with jax.set_mesh(mesh), jax.default_matmul_precision("default"):
    return jax.jit(grads).lower(params, x, seg).compile()


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--target", default="v5p:2x2x1")
  p.add_argument("--impl", nargs="+", default=["splash"])
  p.add_argument("--head_dim", type=int, nargs="+", default=[64, 128])
  p.add_argument("--seq_len", type=int, nargs="+", default=[8192])
  p.add_argument("--window", type=int, nargs="+", default=[-1, 1023])
  p.add_argument("--batch", type=int, default=4)
  p.add_argument("--d_model", type=int, default=1024)
  p.add_argument("--dtype", default="bfloat16")
  p.add_argument("--out", default="")
  a = p.parse_args()
  mesh = tpu_mesh(a.target)
  for impl in a.impl:
    for head_dim in a.head_dim:
      for seq_len in a.seq_len:
        for window in a.window:
          row = {"date": datetime.date.today().isoformat(), "target": a.target, "jax": jax.__version__,
                 "mesh": dict(mesh.shape), "impl": impl, "batch": a.batch, "seq_len": seq_len,
                 "num_heads": a.d_model // head_dim, "head_dim": head_dim, "window": window, "dtype": a.dtype}
          t0 = time.time()
          try:
            compiled = compile_attention(mesh, batch=a.batch, seq_len=seq_len, num_heads=a.d_model // head_dim,
                                         head_dim=head_dim, window=window, impl=impl, dtype=jnp.dtype(a.dtype))
            row.update(compile_s=round(time.time() - t0, 1), kernels=kernels(compiled),
                       temp_gb=compiled.memory_analysis().temp_size_in_bytes / 1e9)
          except Exception as e:  # pylint: disable=broad-except  # a case that does not lower is a result
            row.update(compile_s=round(time.time() - t0, 1), error=f"{type(e).__name__}: {str(e)[:300]}")
          print(json.dumps(row), flush=True)
          if a.out:
            with open(a.out, "a", encoding="utf-8") as f:
              f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
  main()
