"""hnet/configs/validate.py: every config key's range and the combinations, one message naming the key."""
import importlib
import pkgutil

import pytest

import hnet.configs
from hnet.configs import base, stored, validate
from hnet.model import stack


def _config_files():
  for m in pkgutil.iter_modules(hnet.configs.__path__):
    if hasattr(importlib.import_module(f"hnet.configs.{m.name}"), "get_config"):
      yield m.name


@pytest.mark.parametrize("name", sorted(_config_files()))
@pytest.mark.parametrize("variant", [None, "tiny"])
def test_every_shipped_config_is_valid(name, variant):
  validate.check(importlib.import_module(f"hnet.configs.{name}").get_config(variant))


@pytest.mark.parametrize("key,value,message", [
    ("train.num_steps", -5, "train.num_steps=-5 must be an integer >= 1"),
    ("train.num_steps", 0, "train.num_steps=0 must be an integer >= 1"),
    ("opt.lr", -1.0, "opt.lr=-1.0 must be a number > 0.0"),
    ("opt.lr", float("nan"), "opt.lr=nan must be a number > 0.0"),
    ("opt.warmup_steps", -1, "opt.warmup_steps=-1 must be an integer >= 0"),
    ("opt.weight_decay", -0.1, "opt.weight_decay=-0.1 must be a number >= 0"),
    ("opt.b2", 1.0, "opt.b2=1.0 must be a number in [0.0, 1.0)"),
    ("opt.schedule", "linear", "opt.schedule='linear' must be one of ('wsd', 'cosine')"),
    ("opt.lr_multipliers", (1.0, -2.0), "opt.lr_multipliers=(1.0, -2.0) entry 1 (-2.0) must be a number > 0.0"),
    ("train.batch_size", 0, "train.batch_size=0 must be an integer >= 1"),
    ("train.eval_every", 0, "train.eval_every=0 must be an integer >= 1"),
    ("train.eval_batches", 0, "train.eval_batches=0 must be an integer >= 1 (or -1: the whole split)"),
    ("train.log_every", -1, "train.log_every=-1 must be an integer >= 1"),
    ("ckpt.every", 0, "ckpt.every=0 must be an integer >= 1"),
    ("ckpt.keep", 0, "ckpt.keep=0 must be an integer >= 1"),
    ("mesh.data", 0, "mesh.data=0 must be an integer >= 1 (or -1: the rest of the devices)"),
    ("mesh.dcn_data", 0, "mesh.dcn_data=0 must be an integer >= 1"),
    ("train.profile_steps", (0, 2), "train.profile_steps=(0, 2) must be () (off) or (start step, number of steps)"),
    ("train.profile_steps", (5,), "train.profile_steps=(5,) must be () (off) or (start step, number of steps)"),
    ("data.seq_len", 1, "data.seq_len=1 must be an integer >= 2"),
    ("data.txt_doc_bytes", -1, "data.txt_doc_bytes=-1 must be an integer >= 0"),
    ("data.validation_fraction", 1.0, "data.validation_fraction=1.0 must be a number in [0.0, 1.0)"),
    ("data.invalid_utf8", "drop", "data.invalid_utf8='drop' must be one of ('keep', 'replace')"),
    ("model.d_model", (128, -192), "model.d_model=(128, -192) entry 1 (-192) must be an integer >= 1"),
    ("model.window", (-2, -1), "model.window=(-2, -1) entry 0 (-2) must be an integer >= 0 (or -1: global)"),
    ("model.remat", "some", "model.remat='some' must be one of"),
    ("model.delete_gate_scale", 30.0, "model.delete_gate_scale=30.0 must be a number < 0.0"),
    ("eval.batch_size", 0, "eval.batch_size=0 must be an integer >= 1"),
    ("eval.bpb_batches", 0, "eval.bpb_batches=0 must be an integer >= 1 (or -1: the whole split)"),
    ("eval.mc_choices", 1, "eval.mc_choices=1 must be an integer >= 2"),
    ("eval.mc_targets", ("context", "prompt"), "eval.mc_targets=('context', 'prompt') has ['prompt']"),
])
def test_a_value_out_of_range_names_its_key(key, value, message):
  c = base.get_config()
  section, leaf = key.split(".")
  c[section][leaf] = value
  with pytest.raises(ValueError) as e:
    validate.check(c)
  assert str(e.value).startswith(message), str(e.value)


def test_any_one_mesh_axis_may_be_the_rest_of_the_devices():
  """docs/accelerators.md's `--config.mesh.fsdp=-1 --config.mesh.data=1` passes validation."""
  for axis in ("data", "fsdp", "tensor"):
    c = base.get_config()
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, 1, 1
    c.mesh[axis] = -1
    validate.check(c)
  c.mesh.data = -1
  with pytest.raises(ValueError, match=r"at most one axis may be -1 .* mesh.data=-1, mesh.tensor=-1: give the others"):
    validate.check(c)


@pytest.mark.parametrize("settings,message", [
    ({"data.text_paths": "x.txt"}, "data.text_paths='x.txt' is read only with data.dataset='text' (it is 'builtin')"),
    ({"data.dataset": "text"}, "data.dataset='text' needs data.text_paths"),
    ({"train.batch_size": 16, "train.grad_accum_steps": 3}, "train.batch_size=16 must be divisible by "
     "train.grad_accum_steps=3"),
])
def test_keys_that_do_not_fit_together(settings, message):
  c = base.get_config()
  for key, value in settings.items():
    section, leaf = key.split(".")
    c[section][leaf] = value
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    validate.check(c)


def test_text_paths_with_dataset_text_is_fine():
  c = base.get_config()
  c.data.dataset, c.data.text_paths = "text", "x.txt"
  validate.check(c)


def test_a_run_read_back_is_validated_with_its_overrides():
  """eval.py's config (stored + --config.* overrides) goes through the same rules."""
  run = base.get_config().to_dict()
  assert stored.merge_config(run, {"eval.batch_size": 2}, base.get_config()).eval.batch_size == 2
  with pytest.raises(ValueError, match=r"^eval.batch_size=0 must be an integer >= 1$"):
    stored.merge_config(run, {"eval.batch_size": 0}, base.get_config())


def test_the_remat_choices_are_the_models():
  assert set(validate.REMAT) == {"none", *stack.REMAT_POLICIES}


def test_every_key_of_base_has_a_rule_or_says_where_it_is_checked():
  """A key added to base.py must come with its range here (or a line saying why it has none)."""
  keys = set(stored.flatten(base.get_config().to_dict()))
  assert keys - set(validate.RULES) - set(validate.NO_RULE) == set()
  assert set(validate.RULES) | set(validate.NO_RULE) <= keys  # no rule for a key that is gone
