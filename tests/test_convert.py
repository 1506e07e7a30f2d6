"""hnet.convert and hnet.convert.torch_files on the official-code fixture (tests/fixtures/hnet_official, see its README).

The fixture's reference logits were computed by the official PyTorch code; here they are
reproduced from the converted weights without torch, by the full forward and by cached
generation steps. Refusals (missing / extra / mis-shaped / non-finite tensor, a malicious
pickle, a mismatching official config) are one-line errors.
"""
# pylint: disable=invalid-name
import gzip
import importlib.util
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx

from bench.param_counts import OFFICIAL_PARAMS
from hnet.config import model_config_from_dict
from hnet.convert import official as convert
from hnet.convert.torch_files import TensorRef, UnsafeFileError, read_state_dict
from hnet.model import generate
from hnet.model.lm import HNetLM, count_params
from hnet.train import runs, trainer
from hnet.train.checkpoint import Checkpointer
from tests.helpers import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "hnet_official")
WEIGHTS = os.path.join(FIXTURE, "hnet_2stage_tiny.pt")


def _fixture_config():
  spec = importlib.util.spec_from_file_location("hnet_2stage_tiny_config",
                                                os.path.join(FIXTURE, "hnet_2stage_tiny_config.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  convert.exact_inference(c)
  return c


@pytest.fixture(scope="module")
def reference():
  return dict(np.load(os.path.join(FIXTURE, "hnet_2stage_tiny_reference.npz")))


@pytest.fixture(scope="module")
def model_cfg():
  return model_config_from_dict(_fixture_config().model)


@pytest.fixture(scope="module")
def converted(model_cfg):
  """The fixture's converted parameters and the model holding them."""
  params = convert.convert(read_state_dict(WEIGHTS), model_cfg, "hnet_2stage_tiny.pt")
  graphdef = nnx.split(nnx.eval_shape(lambda: HNetLM(model_cfg, rngs=nnx.Rngs(params=0))), nnx.Param)[0]
  return params, nnx.merge(graphdef, params)


ROW = 64  # both reference inputs (50 and 54 bytes) padded into rows of one shape: one compile


@jax.jit
def _logits(graphdef, state, tokens_BL, segment_ids_BL):
  return nnx.merge(graphdef, state)(tokens_BL, segment_ids_BL)


def _forward_both(model, reference):
  """Logits and metrics of the single and the packed reference input, each run as one padded row of ROW."""
  tokens, segs = np.zeros((2, ROW), np.int32), np.zeros((2, ROW), np.int32)
  for b, (tok, seg) in enumerate([(reference["single_tokens"], np.ones_like(reference["single_tokens"])),
                                  (reference["packed_tokens"], reference["packed_segment_ids"])]):
    tokens[b, :len(tok)], segs[b, :len(seg)] = tok, seg
  graphdef, state = nnx.split(model)
  state = jax.device_get(state)  # host arrays: the same compiled program whatever devices they came from
  out = {}
  for b, case in enumerate(("single", "packed")):  # each row on its own: aux metrics are batch means
    logits, aux = _logits(graphdef, state, tokens[b:b + 1], segs[b:b + 1])
    out[case] = np.asarray(logits[0, :len(reference[f"{case}_tokens"])]), jax.device_get(aux["metrics"])
  return out


# ---------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["formats.pt", "formats.safetensors"])
def test_reader_reads_every_dtype_and_layout(name):
  ref = np.load(os.path.join(FIXTURE, "formats_reference.npz"))
  tensors = read_state_dict(os.path.join(FIXTURE, name))
  assert sorted(tensors) == sorted(ref.files)
  assert tensors["bf16"].dtype == ml_dtypes.bfloat16 and tensors["f16"].dtype == np.float16
  for k, t in tensors.items():
    x = t.load()
    assert x.shape == ref[k].shape == t.shape, k
    np.testing.assert_array_equal(x.astype(np.float32), ref[k], err_msg=k)


def _torch_zip(payload: bytes) -> bytes:
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w") as z:
    z.writestr("archive/data.pkl", payload)
    z.writestr("archive/version", "3\n")
  return buf.getvalue()


class _System:
  def __init__(self, command):
    self.command = command

  def __reduce__(self):
    return os.system, (self.command,)


class _Eval:
  def __reduce__(self):
    return eval, ("__import__('os').system('true')",)


@pytest.mark.parametrize("payload", [_System, _Eval])
def test_malicious_pickle_is_refused_without_running_it(tmp_path, payload):
  marker = tmp_path / "pwned"
  obj = payload(f"touch {marker}") if payload is _System else payload()
  path = tmp_path / "evil.pt"
  path.write_bytes(_torch_zip(pickle.dumps({"w": obj}, protocol=2)))
  with pytest.raises(UnsafeFileError, match=r"the pickle asks for (posix|os|builtins|__builtin__)\.(system|eval)") as e:
    read_state_dict(str(path))
  assert "\n" not in str(e.value)
  assert not marker.exists()


def test_non_tensor_entries_and_bad_files_are_refused(tmp_path):
  path = tmp_path / "ints.pt"
  path.write_bytes(_torch_zip(pickle.dumps({"w": 3}, protocol=2)))
  with pytest.raises(ValueError, match="entry 'w' is not a tensor"):
    read_state_dict(str(path))
  path = tmp_path / "junk.safetensors"
  path.write_bytes(struct.pack("<Q", 10**12) + b"{}")
  with pytest.raises(ValueError, match="header length"):
    read_state_dict(str(path))
  with pytest.raises(FileNotFoundError):
    read_state_dict(str(tmp_path / "absent.pt"))


# ---------------------------------------------------------------------------------------------
# The official model's logits
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def outputs(converted, reference):
  return _forward_both(converted[1], reference)


@pytest.mark.parametrize("case", ["single", "packed"])
def test_converted_fixture_matches_official_logits(outputs, reference, case):
  """Same logits (fp32, 1e-4) and boundary counts per stage as the official code, no boundary dropped."""
  logits, metrics = outputs[case]
  np.testing.assert_allclose(logits, reference[f"{case}_logits"], atol=1e-4, rtol=0)
  length = len(reference[f"{case}_tokens"])
  for s in range(2):
    official = reference[f"{case}_boundary_stage{s}"]
    positions = length if s == 0 else int(reference[f"{case}_boundary_stage0"].sum())
    assert round(float(metrics[f"stage{s}/boundary_frac"]) * positions) == int(official.sum()), s
    assert float(metrics[f"stage{s}/overflow_frac"]) == 0.0


def test_cached_generation_steps_match_official_logits(converted, reference):
  """Byte-by-byte decoding with caches (eval.py generate) gives the official forward's logits."""
  _, model = converted
  logits = generate.step_logits(model, jnp.asarray(reference["single_tokens"])[None])
  np.testing.assert_allclose(np.asarray(logits[0]), reference["single_logits"], atol=1e-4, rtol=0)


def test_a_wrong_mapping_changes_the_logits(model_cfg, reference):
  """The comparison can fail: swapping the router's W_q and W_k (same shapes) moves the logits."""
  tensors = read_state_dict(WEIGHTS)
  q, k = "backbone.routing_module.q_proj_layer.weight", "backbone.routing_module.k_proj_layer.weight"
  tensors[q], tensors[k] = tensors[k], tensors[q]
  params = convert.convert(tensors, model_cfg)
  graphdef = nnx.split(nnx.eval_shape(lambda: HNetLM(model_cfg, rngs=nnx.Rngs(params=0))), nnx.Param)[0]
  logits, _ = _forward_both(nnx.merge(graphdef, params), reference)["single"]
  assert np.abs(logits - reference["single_logits"]).max() > 1e-3


# ---------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------
def _broken(kind: str) -> dict[str, TensorRef]:
  tensors = read_state_dict(WEIGHTS)
  name = "backbone.main_network.encoder.layers.1.mixer.in_proj.weight"
  if kind == "missing":
    del tensors[name]
  elif kind == "extra":
    tensors["backbone.encoder.layers.2.norm1.weight"] = tensors["backbone.encoder.layers.1.norm1.weight"]
  elif kind == "shape":
    t = tensors[name]
    tensors[name] = TensorRef(t.shape[::-1], t.dtype, lambda: t.load().T)
  elif kind == "nan":
    t = tensors[name]
    tensors[name] = TensorRef(t.shape, t.dtype, lambda: np.full(t.shape, np.nan, np.float32))
  return tensors


@pytest.mark.parametrize("kind,message", [
    ("missing", r"tensor backbone\.main_network\.encoder\.layers\.1\.mixer\.in_proj\.weight is missing"),
    ("extra", r"tensor backbone\.encoder\.layers\.2\.norm1\.weight is not part of the model"),
    ("shape", r"tensor backbone\.main_network\.encoder\.layers\.1\.mixer\.in_proj\.weight has shape "
              r"\(32, 164\), the config needs \(164, 32\)"),
    ("nan", r"tensor backbone\.main_network\.encoder\.layers\.1\.mixer\.in_proj\.weight holds NaN"),
])
def test_bad_state_dicts_are_refused_naming_the_tensor(model_cfg, kind, message):
  with pytest.raises(ValueError, match=message) as e:
    convert.convert(_broken(kind), model_cfg, "x.pt")
  assert "\n" not in str(e.value)


def test_official_config_mismatch_is_refused(model_cfg):
  with open(os.path.join(FIXTURE, "hnet_2stage_tiny.json"), encoding="utf-8") as f:
    official = json.load(f)
  convert.check_official_config(model_cfg, official)
  official["attn_cfg"]["window_size"][1] = 1023
  with pytest.raises(ValueError, match=r"attn_cfg\.window_size\[1\] is 1023 there but 7 in this config"):
    convert.check_official_config(model_cfg, official)


def _safetensors(path, tensors: dict) -> None:
  """Writes `tensors` (name -> array) as a .safetensors file (bfloat16 and float32)."""
  header, blobs, offset = {}, [], 0
  for name, x in tensors.items():
    data = x.tobytes()
    dtype = "BF16" if x.dtype == ml_dtypes.bfloat16 else "F32"
    header[name] = {"dtype": dtype, "shape": list(x.shape), "data_offsets": [offset, offset + len(data)]}
    blobs.append(data)
    offset += len(data)
  head = json.dumps(header).encode()
  path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def _convert_cli(path, workdir) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, "-m", "hnet.convert", f"--pytorch={path}", f"--workdir={workdir}",
       f"--config={os.path.join(FIXTURE, 'hnet_2stage_tiny_config.py')}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


MISSING = "backbone.main_network.main_network.main_network.layers.1.mlp.fc2.weight"


@pytest.mark.parametrize("change,message", [
    ("missing", f"tensor {MISSING} is missing (1 of the 94 tensors the config needs is absent: is it the right "
                "--config?)"),
    ("extra", "tensor extra.weight is not part of the model the config builds (1 unexpected tensor: is it the "
              "right --config?)"),
])
def test_cli_refuses_a_missing_or_extra_tensor_in_one_line(change, message, tmp_path):
  """A .safetensors file lacking one tensor, or with one too many: one line naming it, and nothing before it."""
  tensors = {name: t.load() for name, t in read_state_dict(WEIGHTS).items() if name != MISSING or change != "missing"}
  if change == "extra":
    tensors["extra.weight"] = np.zeros((2,), np.float32)
  path = tmp_path / "w.safetensors"
  _safetensors(path, tensors)
  proc = _convert_cli(path, tmp_path / "run")
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines() == [f"convert: error: w.safetensors: {message}"], proc.stderr[-2000:]
  assert proc.stdout == ""  # no "converting to float32" before the refusal
  assert not (tmp_path / "run").exists()


def test_cli_logs_each_step_once(tmp_path):
  """A conversion's progress lines: after the checks, each printed once (not again through absl's handler)."""
  proc = _convert_cli(WEIGHTS, tmp_path / "run")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines() == [
      "hnet_2stage_tiny.pt: 94 tensors checked; converting to float32",
      f"writing 158,472 parameters to {tmp_path / 'run'}"], proc.stderr[-2000:]
  assert proc.stdout.startswith(f"wrote {tmp_path / 'run' / 'checkpoints' / '0'}: 94 tensors -> 158,472 parameters")


# ---------------------------------------------------------------------------------------------
# The official configs
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def official():
  with gzip.open(os.path.join(FIXTURE, "official_configs.json.gz"), "rt", encoding="utf-8") as f:
    return json.load(f)


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_every_official_config_maps_name_for_name(official, name):
  """Our config of each published model: same fields as its JSON, the same tensors (names and shapes)
  as the official module definitions build, and the official parameter count."""
  cfg = model_config_from_dict(load_config(name, "").model)
  convert.check_official_config(cfg, official["configs"][name], name)
  shapes = {k: tuple(v) for k, v in official["shapes"][name].items()}
  assert convert.expected_tensors(cfg) == shapes
  n_official = sum(int(np.prod(s)) for s in shapes.values())
  assert n_official == OFFICIAL_PARAMS[name]
  assert count_params(nnx.eval_shape(lambda: HNetLM(cfg, rngs=nnx.Rngs(params=0)))) == n_official


# ---------------------------------------------------------------------------------------------
# eval.py and train.py on a converted checkpoint
# ---------------------------------------------------------------------------------------------
def test_converted_checkpoint_loads_for_eval(tmp_path, reference):
  """convert_file writes a work dir whose checkpoint eval.py's loader restores with the official logits."""
  workdir = str(tmp_path / "run")
  out = convert.convert_file(WEIGHTS, _fixture_config(), workdir,
                             official_config=os.path.join(FIXTURE, "hnet_2stage_tiny.json"))
  assert out["parameters"] == 158_472 and out["capacity_slack"] == 2.0
  with pytest.raises(ValueError, match="already holds checkpoints"):
    convert.convert_file(WEIGHTS, _fixture_config(), workdir)
  loaded = runs.load(workdir)
  assert loaded.step == 0 and loaded.config.model.capacity_slack == 2.0
  logits, _ = _forward_both(loaded.model, reference)["single"]
  np.testing.assert_allclose(logits, reference["single_logits"], atol=1e-4, rtol=0)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
  try:
    assert ckpt.params_only(0) and ckpt.restore(None) is None  # not a resumable train state
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), nnx.state(loaded.model, nnx.Param))
    wider = _fixture_config().model.to_dict()
    wider["d_model"] = (32, 32, 64)
    wider = model_config_from_dict(wider)
    other = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), convert.abstract_params(wider))
    assert ckpt.restore_params(abstract)[1] == 0
    with pytest.raises(ValueError, match=r"do not fit the model of this config: parameter backbone/inner/inner/main/"):
      ckpt.restore_params(other)
  finally:
    ckpt.close()


def test_parameters_only_checkpoint_starts_a_fine_tune(tmp_path):
  """train.py in a work dir holding only parameters (what hnet.convert writes) starts from them at step 0
  with a fresh optimizer; its own checkpoints are full train states that later runs resume."""
  workdir = str(tmp_path / "run")
  c = load_config("hnet_1stage")  # the settings of tests/test_trainer.py: one compiled train step for both
  c.data.data_dir = str(tmp_path / "tfds")
  c.train.num_steps = 4
  c.train.batch_size = 8  # divisible by the 8 test devices
  c.train.log_every = 1
  c.train.eval_every = 4
  c.train.eval_batches = 1
  c.train.full_final_eval = False
  c.ckpt.every = 100
  c.ckpt.async_save = False
  model_cfg = model_config_from_dict(c.model)
  start = nnx.state(HNetLM(model_cfg, rngs=nnx.Rngs(params=7)), nnx.Param)  # not the trainer's seed-0 init
  convert.write_checkpoint(workdir, start, json.loads(c.to_json_best_effort()))
  result = trainer.train_and_evaluate(c, workdir, progress=False, stop_after=1)
  assert result["step"] == 1 and np.isfinite(result["train"]["loss"])
  after = nnx.state(runs.load(workdir).model, nnx.Param)
  seed0 = nnx.state(HNetLM(model_cfg, rngs=nnx.Rngs(params=0)), nnx.Param)
  diff = lambda a, b: max(jax.tree.leaves(jax.tree.map(  # noqa: E731
      lambda x, y: float(np.abs(np.asarray(x) - np.asarray(y)).max()), a, b)))
  assert diff(after, start) == 0.0  # the first step's learning rate is 0 (warmup): still the given params
  assert diff(after, seed0) > 0.1
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
  try:
    assert ckpt.all_steps() == [0, 1] and ckpt.params_only(0) and not ckpt.params_only(1)
  finally:
    ckpt.close()
