"""docs/eval.md's sample outputs: each is what its command prints (docs/eval_samples.py regenerates them).

The doc's run (the default config, 20 steps) costs minutes; here the same commands run on the tiny
session run and every sample must have the layout they print (lines, table rows, labels), and the
figures that do not depend on the model (the validation split's target bytes) must be the doc's.
`python docs/eval_samples.py --check` compares every figure on the doc's own run.
"""
import importlib.util
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("eval_samples", os.path.join(ROOT, "docs", "eval_samples.py"))
samples = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(samples)

with open(samples.DOC, encoding="utf-8") as _f:
  BLOCKS = {name: (command, body) for name, command, body in samples.blocks(_f.read())}
# The tiny run's rows are 64 bytes: a shorter continuation fits, and fewer items keep it quick (same layout).
TINY = {"noise": ("--config.eval.continuation_bytes=16", "--config.eval.num_items=16",
                  "--config.eval.num_documents=64"),
        "mc": ("--config.eval.continuation_bytes=16", "--config.eval.num_items=16", "--config.eval.num_documents=64")}


def test_the_doc_has_its_samples():
  assert set(BLOCKS) == {"bpb", "noise", "mc", "boundaries"}
  assert all(body.strip() for _, body in BLOCKS.values()), "an empty sample: run python docs/eval_samples.py"


@pytest.fixture(scope="module")
def printed(tiny_hnet_run, tmp_path_factory):
  """What each sample's command prints on the tiny run (a copy, so its eval/ files stay apart)."""
  import shutil  # pylint: disable=import-outside-toplevel
  workdir = str(tmp_path_factory.mktemp("samples") / "run")
  shutil.copytree(tiny_hnet_run[0], workdir)
  return {name: samples.run_command(command, workdir, ROOT, TINY.get(name, ()))
          for name, (command, _) in BLOCKS.items()}


@pytest.mark.parametrize("name", ["bpb", "noise", "mc", "boundaries"])
def test_each_sample_has_the_layout_its_command_prints(printed, name):
  def shape(body):  # the boundary marks under the text depend on the model
    return [re.sub(r"^(s[N\d]+) .*", r"\1 marks", line) for line in samples.layout(body)]
  assert shape(BLOCKS[name][1]) == shape(printed[name])


def test_the_target_bytes_of_the_validation_split_are_the_docs(printed):
  """Every byte of the split and each document's EOS: the same count for any model."""
  def targets(body):
    return re.search(r"\| target bytes \| ([\d,]+) \|", body)[1]
  assert targets(BLOCKS["bpb"][1]) == targets(printed["bpb"]) == "1,288,526"
