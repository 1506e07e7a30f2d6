"""bench/param_counts.py: every config file of hnet/configs is counted, blt with its entropy LM."""
import os

from flax import nnx

from bench import param_counts
from hnet import configs
from hnet.model.lm import HNetLM, count_params


def test_the_list_covers_every_config_file_in_the_folder():
  folder = os.path.dirname(os.path.abspath(configs.__file__))
  files = set()
  for name in os.listdir(folder):
    if name.endswith(".py"):
      with open(os.path.join(folder, name), encoding="utf-8") as f:
        if "\ndef get_config(" in f.read():
          files.add(name[:-3])
  assert set(param_counts.config_names()) == files - {"base"}
  assert {"blt", "entropy_lm", "default", "hnet_2stage_XL_code"} <= files


def test_every_config_has_a_row_and_blt_counts_its_entropy_lm(capsys):
  param_counts.main()
  rows = {line.split(" | ")[0].lstrip("| "): line for line in capsys.readouterr().out.splitlines()[2:]}
  assert sorted(rows) == param_counts.config_names()
  assert "DIFFERENT" not in "".join(rows.values())
  _, blt = param_counts.model_config("blt")
  _, lm = param_counts.model_config("entropy_lm")
  model = nnx.eval_shape(lambda: HNetLM(blt, rngs=nnx.Rngs(params=0)))
  lm_params = count_params(nnx.eval_shape(lambda: HNetLM(lm, rngs=nnx.Rngs(params=0))))
  assert count_params(model.backbone.router.entropy_lm) == lm_params
  assert f"| {count_params(model):,} |" in rows["blt"] and f"| {lm_params:,} |" in rows["entropy_lm"]
