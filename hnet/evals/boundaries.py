"""Per-stage chunk boundaries and boundary probabilities of a restored model for one text.

`routing(model, tokens_BL, segment_ids_BL)` walks `model.backbone` stage by stage with
`Stage.route` (pad, encoder, router, budget cut), as `Stage.__call__` does, and
returns each outer stage's kept boundaries and router probabilities, in inference mode
(hard deletion for the delete gate). The text (BOS first, as in training) is padded to a
multiple of PAD_MULTIPLE bytes so similar lengths share a compile.
"""
# pylint: disable=invalid-name
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hnet import BOS_ID
from hnet.evals import boundary_rendering
from hnet.model import chunking
from hnet.model.lm import HNetLM
from hnet.train.runs import Loaded

PAD_MULTIPLE = 64


def routing(model: HNetLM, tokens_BL: jax.Array, segment_ids_BL: jax.Array) -> list[dict]:
  """Per outer stage: kept boundaries (B, L_s), probabilities (B, L_s), valid chunks (B,)."""
  stage, seg_BL, owner_BL = model.backbone, segment_ids_BL, None
  x_BLD = model.embed(tokens_BL)
  out = []
  while not stage.is_innermost:
    h_BLD, _, r, chunks = stage.route(x_BLD, seg_BL, owner_ids_BL=owner_BL,
                                      tokens_BL=tokens_BL if stage.index == 0 else None)
    out.append({"boundary_BL": chunks.boundary_BL, "prob_BL": r.prob_BL.astype(jnp.float32),
                "chunks_B": jnp.sum(chunks.valid_BM, axis=1)})
    x_BLD, seg_BL, owner_BL = chunking.downsample(h_BLD, chunks), chunks.segment_ids_BM, chunks.owner_BM
    stage = stage.inner
  return out


@jax.jit(static_argnames=("graphdef",))
def _routing(params, tokens_BL, segment_ids_BL, *, graphdef):
  return routing(nnx.merge(graphdef, params), tokens_BL, segment_ids_BL)


def extract(loaded: Loaded, text: bytes) -> tuple[bytes, list[np.ndarray], list[np.ndarray]]:
  """(BOS + text, boundaries per stage, probabilities per stage), trimmed to each stage's elements."""
  data = bytes([BOS_ID]) + text
  L = -(-len(data) // PAD_MULTIPLE) * PAD_MULTIPLE
  tokens_BL = np.zeros((1, L), np.int32)
  tokens_BL[0, :len(data)] = np.frombuffer(data, np.uint8)
  seg_BL = np.zeros((1, L), np.int32)
  seg_BL[0, :len(data)] = 1
  with jax.set_mesh(loaded.mesh):
    stages = jax.device_get(_routing(loaded.params, jnp.asarray(tokens_BL), jnp.asarray(seg_BL),
                                     graphdef=loaded.graphdef))
  boundaries, probs, n = [], [], len(data)
  for st in stages:
    boundaries.append(np.asarray(st["boundary_BL"][0, :n], bool))
    probs.append(np.asarray(st["prob_BL"][0, :n], np.float32))
    n = int(st["chunks_B"][0])
  return data, boundaries, probs


def run(loaded: Loaded, text: bytes, out_dir: str) -> dict:
  """Writes boundaries.html / .txt / boundary_probs.png to out_dir; returns stats, paths, terminal text."""
  if not text:
    raise ValueError("boundaries needs a non-empty --text or --text_file")
  if loaded.model_cfg.num_stages < 2:
    raise ValueError("boundaries needs a hierarchical model: this checkpoint has one stage (router 'none')")
  data, boundaries, probs = extract(loaded, text)
  title = f"{loaded.model_cfg.router} router, step {loaded.step}"
  paths = boundary_rendering.write_report(out_dir, data, boundaries, probs, title=title)
  stages = []
  for s, b in enumerate(boundaries):
    chunks = int(b.sum()) + (0 if b[0] else 1)  # element 0 always starts a chunk
    stages.append({"stage": s, "elements": len(b), "chunks": chunks, "bytes_per_chunk": len(data) / chunks,
                   "boundaries": [int(i) for i in np.flatnonzero(b)],
                   "probs": [round(float(p), 4) for p in probs[s]]})
  return {"step": loaded.step, "bytes": len(data), "stages": stages, "files": paths,
          "terminal": boundary_rendering.to_terminal(data, boundaries)}


def rows(result: dict) -> list[dict]:
  return [{"stage": st["stage"], "elements": st["elements"], "chunks": st["chunks"],
           "bytes/chunk": f"{st['bytes_per_chunk']:.2f}"} for st in result["stages"]]
