"""Shared test utilities: tiny model configs and packed inputs."""
import functools
import importlib
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hnet.config import model_config_from_dict
from hnet.model import HNetLM

FAMILIES = ("flat", "hnet_1stage", "hnet_2stage", "mrt5", "word", "stride", "default", "blt")  # default: local attention


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
