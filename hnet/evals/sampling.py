"""Batched sampling from a restored model (cached incremental decoding, hnet.generate)."""
import os
import unicodedata
from typing import Sequence

import jax

from hnet import generate
from hnet.evals.loading import Loaded


def read_prompts(prompts: Sequence[str] = (), prompt_file: str | None = None) -> list[bytes]:
  """Prompts from the command line, then one per line of `prompt_file` (blank lines skipped)."""
  out = [p.encode("utf-8", "surrogateescape") for p in prompts]
  if prompt_file:
    if not os.path.isfile(prompt_file):
      raise FileNotFoundError(f"prompt file {prompt_file!r} does not exist")
    with open(prompt_file, "rb") as f:
      out += [line.rstrip(b"\r\n") for line in f if line.strip()]
  if not out:
    raise ValueError("generate needs --prompt (repeatable) or --prompt_file")
  return out


def show(data: bytes) -> str:
  """UTF-8 text with invalid bytes and control characters (not newline or tab) as \\xNN escapes."""
  text = data.decode("utf-8", "backslashreplace")
  return "".join(c if c in "\n\t" or unicodedata.category(c) != "Cc" else f"\\x{ord(c):02x}" for c in text)


def run(loaded: Loaded, prompts: Sequence[bytes], *, max_bytes: int = 256, temperature: float = 1.0,
        top_k: int = 0, top_p: float = 1.0, seed: int = 0, stop_at_eos: bool = True) -> dict:
  """All prompts in one batch; {'samples': [{'prompt', 'output', 'output_bytes'}], settings...}."""
  with jax.set_mesh(loaded.mesh):
    outputs = generate.generate(loaded.model, list(prompts), max_new_bytes=max_bytes, temperature=temperature,
                                top_k=top_k, top_p=top_p, seed=seed, stop_at_eos=stop_at_eos)
  samples = [{"prompt": show(p), "output": show(o), "output_bytes": len(o)} for p, o in zip(prompts, outputs)]
  return {"step": loaded.step, "temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed,
          "max_bytes": max_bytes, "samples": samples}


def rows(result: dict) -> list[dict]:
  return [{"#": i, "prompt": s["prompt"], "output": s["output"], "bytes": s["output_bytes"]}
          for i, s in enumerate(result["samples"])]
