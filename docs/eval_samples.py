"""Regenerates the sample outputs in docs/eval.md from the commands the doc shows, so they stay true.

  python docs/eval_samples.py            # trains the doc's run if missing, reruns the commands, rewrites the blocks
  python docs/eval_samples.py --check    # the same, but exits 1 (naming the blocks) where the doc differs

The doc's run is `python train.py --config.train.num_steps=20` (the default config, 20 steps) in
`<root>/runs/default` (`--root`, default a fresh temporary directory). Every block between
`<!-- sample NAME: COMMAND -->` and `<!-- /sample -->` in docs/eval.md is what COMMAND prints
there (stdout, the work dir shown as `runs/default`). Figures differ from machine to machine
only in their last digit at most; timings are not part of any block. tests/test_eval_samples.py
runs the same commands on a tiny run and checks that each block has the layout they print.
"""
import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "eval.md")
TRAIN = "python train.py --config.train.num_steps=20"
BLOCK = re.compile(r"(<!-- sample (\w+): (.+?) -->\n```\n)(.*?)(```\n<!-- /sample -->)", re.S)


def blocks(text: str) -> list[tuple[str, str, str]]:
  """(name, command, body) of every sample block in the doc's text."""
  return [(m[2], m[3], m[4]) for m in BLOCK.finditer(text)]


def run_command(command: str, workdir: str, cwd: str, extra: tuple[str, ...] = ()) -> str:
  """What `command` (`python eval.py --workdir runs/default ...`) prints, with `workdir` shown as runs/default."""
  args = shlex.split(command)
  assert args[:2] == ["python", "eval.py"], command
  args = [sys.executable, os.path.join(ROOT, "eval.py"), *(a.replace("runs/default", workdir) for a in args[2:]),
          *extra]
  proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=1800, check=False)
  if proc.returncode:
    raise SystemExit(f"{command}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
  return proc.stdout.replace(os.path.abspath(workdir), "runs/default").replace(workdir, "runs/default")


def layout(body: str) -> list[str]:
  """A printed block without its figures: each table row's first cell, the other lines with digits masked."""
  out = []
  for line in body.splitlines():
    if line.startswith("|") and not line.startswith("|---"):
      cells = [c.strip() for c in line.strip("|").split("|")]
      out.append("| " + cells[0] + " | " + str(len(cells)))
    else:
      out.append(re.sub(r"\d[\d,.]*", "N", line))
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--root", help="directory holding runs/default (trained there if missing)")
  parser.add_argument("--check", action="store_true", help="compare only; exit 1 where the doc differs")
  args = parser.parse_args(argv)
  root = args.root or tempfile.mkdtemp(prefix="hnet-eval-samples-")
  workdir = os.path.join(root, "runs", "default")
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--config.train.num_steps=20",
                    f"--workdir={workdir}", "--progress=false"], cwd=root, check=True)
  with open(DOC, encoding="utf-8") as f:
    text = f.read()
  stale = []

  def regenerate(m: re.Match) -> str:
    body = run_command(m[3], workdir, root)
    if body != m[4]:
      stale.append(m[2])
    return m[1] + body + m[5]

  new = BLOCK.sub(regenerate, text)
  if args.check:
    print(f"stale samples in {DOC}: {', '.join(stale)}" if stale else f"{DOC}: every sample is current")
    return 1 if stale else 0
  with open(DOC, "w", encoding="utf-8") as f:
    f.write(new)
  print(f"{DOC}: {len(blocks(new))} samples regenerated ({', '.join(stale) or 'none'} changed)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
