"""lm-eval's command line with the hnet model registered and hnet's tasks on the include path.

  hnet-lm-eval --model hnet --model_args workdir=runs/default --tasks hellaswag hellaswag_noised
  hnet-lm-eval --model hnet --model_args workdir=runs/default --tasks hellaswag_local hellaswag_local_noised \
      --hellaswag_file hellaswag_val.jsonl                # offline: a local released-format jsonl
  python -m hnet.evals.harness --model hnet ...          # the same without the console script

lm-eval 0.4 finds third-party models only once their module is imported (no plugin entry point), so
`lm_eval --model hnet` alone does not know the model; this command imports it, then hands every
argument to lm-eval unchanged, except `--hellaswag_file` / `--corpus_mc_file`, which go into
`--metadata` for the local tasks. Datasets load offline where a task reads a local file.
"""
import json
import sys


def _argv(argv: list[str]) -> list[str]:
  from hnet.evals.harness import TASKS_DIR  # pylint: disable=import-outside-toplevel
  out, metadata = [], {}
  i = 0
  while i < len(argv):
    arg = argv[i]
    key, eq, value = arg.partition("=")
    if key in ("--hellaswag_file", "--corpus_mc_file"):
      if not eq:
        if i + 1 >= len(argv):
          raise SystemExit(f"{key} needs a path")
        i, value = i + 1, argv[i + 1]
      metadata[key[2:]] = value
    elif key == "--metadata":
      if not eq:
        i, value = i + 1, argv[i + 1]
      metadata.update(json.loads(value))
    else:
      out.append(arg)
    i += 1
  if metadata:
    out += ["--metadata", json.dumps(metadata)]
  if not any(a == "--include_path" or a.startswith("--include_path=") for a in out):
    out += ["--include_path", TASKS_DIR]
  return out


def main(argv: list[str] | None = None) -> None:
  argv = _argv(list(sys.argv[1:] if argv is None else argv))
  import hnet.evals.harness.model  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import  (registers "hnet")
  from lm_eval.__main__ import cli_evaluate  # pylint: disable=import-outside-toplevel
  sys.argv = ["lm_eval"] + argv
  cli_evaluate()


if __name__ == "__main__":
  main()
