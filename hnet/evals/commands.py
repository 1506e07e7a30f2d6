"""eval.py's commands (its library side): load a checkpoint, run one evaluation, print a table, write JSON.

Commands (hnet/evals/*): `bpb` (bits/byte, per-stage compression), `noise` (bits/byte of a
clean continuation after a noised context), `mc` (multiple-choice accuracy, clean and
noised), `robustness` (the papers' table: several models, clean and the five noises),
`generate` (batched sampling), `boundaries` (chunk visualisation).
"""
# pylint: disable=invalid-name
import dataclasses
import os
import re
from typing import Sequence

from hnet import storage
from hnet.evals import boundaries, bpb, documents, mc, mc_items, report, robustness, robustness_report, sampling
from hnet.train import runs
from hnet.train.runs import Loaded

COMMANDS = ("bpb", "noise", "mc", "robustness", "generate", "boundaries")


@dataclasses.dataclass
class Options:
  """Command inputs that are not config keys (eval.py flags)."""
  text: str | None = None  # boundaries: the text
  text_file: str | None = None  # bpb / noise / mc: documents to evaluate; boundaries: the text
  split: str | None = None  # bpb / noise / mc: split of data.dataset (default data.eval_split)
  hellaswag_file: str | None = None  # mc: items from a released-format HellaSwag jsonl
  limit: int = -1  # mc / robustness with a file: the first N items (-1 = all)
  corpus_mc_file: str | None = None  # robustness: items written by hnet.evals.harness.corpus_task
  workdirs: Sequence[str] = ()  # robustness: the models (default: the one work dir)
  metric: str = "acc_norm"  # robustness: acc, acc_norm or acc_bytes
  prompt: Sequence[str] = ()  # generate: prompts (and/or prompt_file, one per line)
  prompt_file: str | None = None
  max_bytes: int = 256
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  seed: int = 0
  out: str | None = None  # JSON path (boundaries: output directory)


def _texts(loaded: Loaded, opts: Options) -> list[str]:
  c = loaded.config
  return documents.as_text(documents.load(c.data, text_file=opts.text_file, split=opts.split,
                                          limit=c.eval.num_documents))


def _source(loaded: Loaded, opts: Options) -> str:
  if opts.text_file:
    return opts.text_file
  return f"{loaded.config.data.dataset}:{opts.split or loaded.config.data.eval_split}"


def run(command: str, loaded: Loaded, opts: Options) -> tuple[dict, list[dict], str]:
  """(result for JSON, table rows, extra text to print) for one command."""
  if command == "bpb":
    result = bpb.evaluate(loaded, text_file=opts.text_file, split=opts.split)
    return result, bpb.rows(result), ""
  if command == "noise":
    result = robustness.evaluate(loaded, robustness.make_pairs(_texts(loaded, opts), loaded.config))
    result["source"] = _source(loaded, opts)
    return result, robustness.rows(result), ""
  if command == "mc":
    c = loaded.config
    if opts.hellaswag_file:
      items, source = mc_items.read_hellaswag_jsonl(opts.hellaswag_file, opts.limit), opts.hellaswag_file
    else:
      items, source = mc.document_items(_texts(loaded, opts), c), _source(loaded, opts)
    result = mc.evaluate(loaded, items)
    result["source"] = source
    return result, mc.rows(result), ""
  if command == "generate":
    prompts = sampling.read_prompts(opts.prompt, opts.prompt_file)
    result = sampling.run(loaded, prompts, max_bytes=opts.max_bytes, temperature=opts.temperature,
                          top_k=opts.top_k, top_p=opts.top_p, seed=opts.seed)
    text = "\n".join(f"--- sample {i} ---\n{s['prompt']}{s['output']}" for i, s in enumerate(result["samples"]))
    return result, sampling.rows(result), text
  if command == "boundaries":
    text = _boundary_text(opts)
    out_dir = opts.out or os.path.join(loaded.workdir, "eval", f"boundaries_step{loaded.step}")
    result = boundaries.run(loaded, text, out_dir)
    return result, boundaries.rows(result), result.pop("terminal")
  raise ValueError(f"unknown command {command!r}; choose one of {', '.join(COMMANDS)}")


def _boundary_text(opts: Options) -> bytes:
  if opts.text is not None:
    return opts.text.encode("utf-8", "surrogateescape")
  if opts.text_file:
    if not storage.path(opts.text_file).is_file():
      raise FileNotFoundError(f"text file {opts.text_file!r} does not exist")
    with storage.open_file(opts.text_file, "rb") as f:
      return f.read()
  raise ValueError("boundaries needs --text or --text_file")


def _slug(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9._-]+", "-", text.replace("%", "pct")).strip("-.") or "x"


def evaluated(command: str, loaded: Loaded, opts: Options) -> str:
  """What a command read, for its file name: 'validation', 'lm1b-test', 'text-notes', 'hellaswag-val'; '' for none."""
  if command not in ("bpb", "noise", "mc"):
    return ""
  if command == "mc" and opts.hellaswag_file:
    return "hellaswag-" + _slug(os.path.basename(opts.hellaswag_file).split(".")[0])
  if opts.text_file:
    return "text-" + _slug(os.path.basename(opts.text_file).split(".")[0])
  c = loaded.config.data
  split = _slug(opts.split or c.eval_split)
  return split if c.dataset in ("builtin", "text") else f"{_slug(c.dataset)}-{split}"


def json_path(command: str, loaded: Loaded, opts: Options) -> str:
  """--out, else <workdir>/eval/<command>_step<N>[_<what was evaluated>].json: one file per input."""
  if command == "boundaries":
    return os.path.join(opts.out or os.path.join(loaded.workdir, "eval", f"boundaries_step{loaded.step}"),
                        "boundaries.json")
  what = evaluated(command, loaded, opts)
  name = f"{command}_step{loaded.step}" + (f"_{what}" if what else "") + ".json"
  return opts.out or os.path.join(loaded.workdir, "eval", name)


def main(command: str, *, workdir: str | None = None, checkpoint: str | None = None, step: int | None = None,
         overrides: dict | None = None, opts: Options | None = None, echo=print) -> dict:
  """Loads, runs `command`, prints a markdown table (via `echo`) and writes the JSON; returns the result."""
  if command not in COMMANDS:
    raise ValueError(f"unknown command {command!r}; choose one of {', '.join(COMMANDS)}")
  opts = opts or Options()
  if command == "robustness":
    return _robustness(list(opts.workdirs) or [workdir or checkpoint], overrides, opts, echo)
  loaded = runs.load(workdir, checkpoint=checkpoint, step=step, overrides=overrides)
  result, rows, text = run(command, loaded, opts)
  result = {"command": command, "checkpoint": os.path.join(loaded.checkpoint_dir, str(loaded.step)), **result}
  echo(f"{command}: step {loaded.step} of {loaded.checkpoint_dir}" + (
      f" on {result['source']}" if "source" in result else ""))
  if text:
    echo(text)
  echo(report.markdown_table(rows))  # the result first: a failed write loses nothing
  echo(f"wrote {report.write_json(json_path(command, loaded, opts), result)}")
  return result


def _robustness(workdirs: list[str], overrides: dict | None, opts: Options, echo) -> dict:
  """Several models in one table (no single checkpoint): JSON and PNG under the first work dir."""
  result = robustness_report.run(workdirs, hellaswag_file=opts.hellaswag_file, corpus_mc_file=opts.corpus_mc_file,
                                 metric=opts.metric, limit=opts.limit, overrides=overrides)
  result = {"command": "robustness", **result}
  echo(f"robustness: {result['metric']} on {result['source']}, {result['num_items']} items, "
       f"{len(workdirs)} model(s)")
  echo(report.markdown_table(robustness_report.rows(result)))  # the table first: a failed write loses nothing
  path = opts.out or os.path.join(workdirs[0], "eval", "robustness.json")
  chart = robustness_report.plot(result, os.path.splitext(path)[0] + ".png")
  echo(f"wrote {report.write_json(path, result)} and {chart}")
  return result
