"""Shared test utilities: tiny model configs and packed inputs."""
import functools
import importlib
import json
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from hnet.config import model_config_from_dict
from hnet.configs.base import get_config
from hnet.model.lm import HNetLM

FAMILIES = ("flat", "hnet_1stage", "hnet_2stage", "mrt5", "word", "stride", "hnet_attn", "blt")  # hnet_attn: local attention


@functools.cache
def entropy_lm_workdir() -> str:
  """A work dir holding only the config of `entropy_lm:tiny`: enough to build a BLT model (random weights)."""
  workdir = tempfile.mkdtemp(prefix="hnet-entropy-lm-")
  c = importlib.import_module("hnet.configs.entropy_lm").get_config("tiny")
  with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
    f.write(c.to_json_best_effort())
  return workdir


def load_config(name: str, variant: str = "tiny"):
  c = importlib.import_module(f"hnet.configs.{name}").get_config(variant)
  if c.model.router == "entropy":
    c.model.entropy_model = entropy_lm_workdir()
  return c


def tiny_model(name: str, seed: int = 0, **model_overrides) -> HNetLM:
  c = load_config(name)
  for k, v in model_overrides.items():
    setattr(c.model, k, v)
  return HNetLM(model_config_from_dict(c.model), rngs=nnx.Rngs(params=seed))


def packed_batch(batch: int = 2, length: int = 64, seed: int = 0, text_like: bool = True):
  """Random bytes in packed rows: 3 documents and trailing padding per row."""
  rng = np.random.default_rng(seed)
  if text_like:  # words and spaces so the whitespace router sees real boundaries
    alphabet = np.frombuffer(b"abcdefghij klmnop qrstu vwxyz ,.\n", np.uint8)
    tokens = rng.choice(alphabet, size=(batch, length)).astype(np.int32)
  else:
    tokens = rng.integers(0, 256, size=(batch, length), dtype=np.int32)
  cut1, cut2, pad = length // 3, 3 * length // 4, length - 4
  seg = np.zeros((batch, length), np.int32)
  seg[:, :cut1], seg[:, cut1:cut2], seg[:, cut2:pad] = 1, 2, 3
  seg[1, cut1 - 5:cut2] = 2  # rows differ in document layout
  return jnp.asarray(tokens), jnp.asarray(seg)


@jax.jit(static_argnums=(0, 4))
def _forward(graphdef, state, tokens, seg, train):
  return nnx.merge(graphdef, state)(tokens, seg, train=train)


def forward(model: HNetLM, tokens, seg, train: bool = False):
  """Jitted forward; compiled once per (model structure, shapes, train)."""
  graphdef, state = nnx.split(model)
  return _forward(graphdef, state, tokens, seg, train)


# Model tests
def loss_fn(model_state, graphdef, tokens, seg, train):
  """Mean next-byte cross-entropy over real positions plus 0.03 x the router losses, and the aux."""
  model = nnx.merge(graphdef, model_state)
  logits, aux = model(tokens, seg, train=train)
  targets = jnp.roll(tokens, -1, axis=1)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  mask = (seg > 0).astype(jnp.float32)
  loss = jnp.sum(ce * mask) / jnp.sum(mask) + 0.03 * sum(aux["router_losses"])
  return loss, aux


# SSD tests
def ssd_inputs(B=2, L=45, H=4, P=8, G=1, N=16, seed=0, dt_shift=-2.0, A_range=(0.1, 1.0)):
  """Random SSD inputs whose decays are slow enough that state (and any leak) survives many steps."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(B, L, H, P))
  dt = np.logaddexp(0.0, rng.normal(size=(B, L, H)) + dt_shift)  # softplus
  A = -rng.uniform(*A_range, size=(H,))
  Bm = rng.normal(size=(B, L, G, N)) / 4
  Cm = rng.normal(size=(B, L, G, N)) / 4
  S0 = rng.normal(size=(B, H, P, N))
  return tuple(jnp.asarray(a, jnp.float32) for a in (x, dt, A, Bm, Cm, S0))


def packed_segments(L):
  """Two rows with different layouts: documents, a one-token document, trailing padding (0)."""
  row0 = [1] * 17 + [2] * 20 + [3] * (L - 37 - 5) + [0] * 5
  row1 = [4] * 5 + [5] + [6] * (L - 6)
  return jnp.array([row0, row1], jnp.int32)


# Data tests
def data_config(tmp_dir, **overrides):
  """config.data with a private data dir and small settings (override any key)."""
  c = get_config().data
  c.data_dir = os.path.join(str(tmp_dir), "tfds")
  c.seq_len = 32
  c.packing_bins = 4
  c.shuffle_window_mb = 0.001  # a few rows: still exercises the window shuffle
  c.prefetch = 0
  for k, v in overrides.items():
    setattr(c, k, v)
  return c


def documents(n: int, seed: int = 0, max_len: int = 100, with_empty: bool = True, ascii_only: bool = False
              ) -> list[str]:
  """Distinct documents "<i>..." of up to max_len characters, some multi-byte (every 7th empty)."""
  rng = np.random.default_rng(seed)
  alphabet = list("abcdefgh ijk\n") + ([] if ascii_only else ["é", "€", "😀"])
  docs = []
  for i in range(n):
    body = "".join(rng.choice(alphabet, size=int(rng.integers(0, max_len))))
    docs.append("" if with_empty and i % 7 == 0 else f"<{i}>{body}")
  return docs


def doc_id(piece: bytes) -> int:
  """The i of a piece that starts a document "<i>..." (BOS first)."""
  return int(piece[2:piece.index(b">")])


def write_jsonl(path, texts, key: str = "text") -> str:
  with open(path, "w", encoding="utf-8") as f:
    for t in texts:
      f.write(json.dumps({key: t}) + "\n")
  return str(path)


def pieces(batch: dict) -> list[bytes]:
  """Every document piece in a batch, as its token bytes.

  A piece's tokens are its inputs, plus the last target when the piece runs to the row's end
  (then its last token is only a target, and loss_mask is 1 there).
  """
  out = []
  for inp, tgt, seg, mask in zip(batch["inputs"], batch["targets"], batch["segment_ids"], batch["loss_mask"]):
    for s in np.unique(seg[seg > 0]):
      idx = np.nonzero(seg == s)[0]
      tail = bytes([int(tgt[idx[-1]])]) if mask[idx[-1]] else b""
      out.append(bytes(inp[idx].astype(np.uint8)) + tail)
  return out


def target_bytes(batch: dict) -> list[int]:
  """The target bytes counted by the loss (loss_mask 1)."""
  return batch["targets"][batch["loss_mask"] > 0].tolist()
