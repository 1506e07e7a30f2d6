"""Read PyTorch state dicts (`.pt` zip files and `.safetensors`) without torch and without running code.

A `.pt` file is a zip archive whose `data.pkl` pickle names tensors through a few torch
functions and whose storages are separate uncompressed records. The pickle is read by a
restricted unpickler: every global it names must be on an allowlist of tensor-rebuilding
functions and storage types, which are mapped to our own inert stand-ins (torch is never
imported); any other global (`os.system`, `builtins.eval`, ...) stops reading before anything
is called. Inert metadata that training code leaves on parameters (omegaconf containers in a
Parameter's `__dict__`: the official H-Net `generate.py` loads its published files inside
`safe_globals([ListConfig])`) is accepted and dropped.

Tensors are returned lazily (`TensorRef`: shape and dtype now, data on `load()`, memory-mapped),
so names and shapes can be checked before any weight is read.
"""
import collections
import dataclasses
import json
import math
import os
import pickle
import struct
import zipfile

import ml_dtypes
import numpy as np

# torch storage class name -> numpy dtype
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
    "UntypedStorage": np.uint8,
}
# safetensors dtype tag -> numpy dtype
_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16, "I64": np.int64,
    "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
_TORCH_DTYPES = {"float64": np.float64, "float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16,
                 "int64": np.int64, "int32": np.int32, "int16": np.int16, "int8": np.int8, "uint8": np.uint8,
                 "bool": np.bool_}


class UnsafeFileError(ValueError):
  """The file asks for something other than tensors (a pickle naming a non-allowlisted global)."""


@dataclasses.dataclass(frozen=True)
class TensorRef:
  """One tensor of a file: shape and dtype, and where its elements are (read on `load`)."""
  shape: tuple[int, ...]
  dtype: np.dtype
  _load: object = dataclasses.field(repr=False, compare=False)

  def load(self) -> np.ndarray:
    """The tensor as a C-contiguous numpy array in its stored dtype (bfloat16 via ml_dtypes)."""
    return self._load()


def read_state_dict(path: str) -> dict[str, TensorRef]:
  """Tensors of a `.pt` / `.pth` / `.bin` (torch zip format) or `.safetensors` file, by name."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} does not exist")
  with open(path, "rb") as f:
    head = f.read(4)
  if head[:2] == b"PK":
    return _read_torch_zip(path)
  if path.endswith(".safetensors"):
    return _read_safetensors(path)
  raise ValueError(f"{path}: neither a torch zip file (torch.save since 1.6) nor a .safetensors file")


# ---------------------------------------------------------------------------------------------
# .safetensors
# ---------------------------------------------------------------------------------------------
def _read_safetensors(path: str) -> dict[str, TensorRef]:
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    if n > min(size - 8, 1 << 28):
      raise ValueError(f"{path}: safetensors header length {n} does not fit the file ({size} bytes)")
    try:
      header = json.loads(f.read(n))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise ValueError(f"{path}: safetensors header is not JSON ({e})") from None
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    if not isinstance(info, dict) or info.get("dtype") not in _SAFETENSORS_DTYPES:
      raise ValueError(f"{path}: tensor {name!r} has an unsupported entry {info!r}")
    dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]])
    shape = tuple(int(d) for d in info["shape"])
    begin, end = (int(x) for x in info["data_offsets"])
    if end - begin != math.prod(shape) * dtype.itemsize or not 0 <= begin <= end <= size - 8 - n:
      raise ValueError(f"{path}: tensor {name!r} has data offsets {begin}..{end} that do not match "
                       f"its shape {shape} {dtype} or the file")
    out[name] = TensorRef(shape, dtype, _memmap_loader(path, 8 + n + begin, dtype, shape))
  return out


def _memmap_loader(path, offset, dtype, shape):
  def load():
    if math.prod(shape) == 0:
      return np.zeros(shape, dtype)
    flat = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(math.prod(shape),))
    return np.array(flat).reshape(shape)
  return load


# ---------------------------------------------------------------------------------------------
# torch zip files
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _StorageType:
  dtype: np.dtype


@dataclasses.dataclass(frozen=True)
class _Storage:
  key: str
  dtype: np.dtype
  numel: int


@dataclasses.dataclass(frozen=True)
class _Tensor:
  storage: _Storage
  offset: int
  size: tuple
  stride: tuple


class _Inert:
  """Stand-in for allowlisted metadata objects (omegaconf containers, typing.Any): takes anything, keeps nothing."""

  def __init__(self, *args, **kwargs):
    del args, kwargs

  def __setstate__(self, state):
    del state

  def __call__(self, *args, **kwargs):
    return _Inert()

  def __setitem__(self, key, value):
    pass

  def append(self, value):
    pass

  def extend(self, values):
    pass


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
  if not isinstance(storage, _Storage):
    raise UnsafeFileError(f"tensor rebuilt from {type(storage).__name__}, not a storage record")
  return _Tensor(storage, int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, *unused):
  del requires_grad, backward_hooks
  tensor = _rebuild_tensor(storage, storage_offset, size, stride)
  if isinstance(dtype, _StorageType) and dtype.dtype != storage.dtype:
    raise UnsafeFileError(f"tensor dtype {dtype.dtype} differs from its storage's {storage.dtype}")
  return tensor


def _rebuild_parameter(data, *unused):
  """Parameters (with or without a `__dict__` state, which is dropped) are their data."""
  return data


def _rebuild_from_type_v2(func, new_type, args, state):
  del new_type, state
  return func(*args)


def _allowlist() -> dict[tuple[str, str], object]:
  allowed = {
      ("collections", "OrderedDict"): collections.OrderedDict,
      ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
      ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
      ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
      ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
      ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
      ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
      ("torch.nn.parameter", "Parameter"): _Inert,
      ("torch", "Tensor"): _Inert,
  }
  for name, dtype in _STORAGE_DTYPES.items():
    allowed[("torch", name)] = _StorageType(np.dtype(dtype))
  allowed[("torch.storage", "UntypedStorage")] = _StorageType(np.dtype(np.uint8))
  for name, dtype in _TORCH_DTYPES.items():
    allowed[("torch", name)] = _StorageType(np.dtype(dtype))
  # Metadata the official H-Net training code leaves in parameters' __dict__ (their `_optim` dicts).
  for module, names in (("omegaconf.listconfig", ["ListConfig"]), ("omegaconf.dictconfig", ["DictConfig"]),
                        ("omegaconf.base", ["ContainerMetadata", "Metadata"]),
                        ("omegaconf.nodes", ["AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode"]),
                        ("typing", ["Any"]), ("collections", ["defaultdict"]),
                        ("builtins", ["list", "dict", "int", "float", "str", "bool", "tuple", "set"]),
                        ("__builtin__", ["list", "dict", "int", "long", "float", "str", "unicode", "bool", "tuple",
                                         "set"])):
    for name in names:
      allowed[(module, name)] = _Inert
  return allowed


_ALLOWED = _allowlist()


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only allowlisted globals, each to our own stand-in; storages become `_Storage` records."""

  def find_class(self, module, name):
    try:
      return _ALLOWED[(module, name)]
    except KeyError:
      raise UnsafeFileError(f"the pickle asks for {module}.{name}, which is not a tensor type; "
                            "refusing to load it") from None

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
      raise UnsafeFileError(f"unexpected persistent id {str(pid)[:80]} (not a tensor storage)")
    _, storage_type, key, _, numel = pid
    return _Storage(str(key), storage_type.dtype, int(numel))


def _read_torch_zip(path: str) -> dict[str, TensorRef]:
  try:
    zf = zipfile.ZipFile(path)
  except zipfile.BadZipFile as e:
    raise ValueError(f"{path}: not a readable zip archive ({e})") from None
  with zf:
    pkl = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pkl) != 1:
      raise ValueError(f"{path}: no <name>/data.pkl record: not a file written by torch.save")
    prefix = pkl[0][: -len("data.pkl")]
    try:
      obj = _RestrictedUnpickler(zf.open(pkl[0])).load()
    except UnsafeFileError as e:
      raise UnsafeFileError(f"{path}: {e}") from None
    except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError, KeyError) as e:
      raise ValueError(f"{path}: cannot read the pickle ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
      raise ValueError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors")
    infos = {i.filename: i for i in zf.infolist()}
    with open(path, "rb") as f:
      out = {}
      for name, t in obj.items():
        if not isinstance(t, _Tensor):
          raise ValueError(f"{path}: entry {name!r} is not a tensor (a {type(t).__name__})")
        info = infos.get(f"{prefix}data/{t.storage.key}")
        if info is None:
          raise ValueError(f"{path}: tensor {name!r} names storage record {t.storage.key!r}, which is missing")
        out[str(name)] = _torch_tensor_ref(path, f, info, t, name)
  return out


def _torch_tensor_ref(path: str, f, info: zipfile.ZipInfo, t: _Tensor, name: str) -> TensorRef:
  s = t.storage
  if info.compress_type != zipfile.ZIP_STORED or info.file_size != s.numel * s.dtype.itemsize:
    raise ValueError(f"{path}: storage of tensor {name!r} is compressed or has {info.file_size} bytes, "
                     f"not {s.numel} x {s.dtype.itemsize}")
  if len(t.size) != len(t.stride) or any(d < 0 for d in t.size + t.stride) or t.offset < 0:
    raise ValueError(f"{path}: tensor {name!r} has size {t.size} / stride {t.stride}")
  last = t.offset + sum((d - 1) * st for d, st in zip(t.size, t.stride)) if all(t.size) else t.offset - 1
  if last >= s.numel:
    raise ValueError(f"{path}: tensor {name!r} reaches element {last} of a storage of {s.numel}")
  f.seek(info.header_offset)
  sig, *_, name_len, extra_len = struct.unpack("<4s5H3L2H", f.read(30))
  if sig != b"PK\x03\x04":
    raise ValueError(f"{path}: bad zip local header for tensor {name!r}")
  data_offset = info.header_offset + 30 + name_len + extra_len

  def load():
    if not all(t.size) or s.numel == 0:
      return np.zeros(t.size, s.dtype)
    storage = np.memmap(path, dtype=s.dtype, mode="r", offset=data_offset, shape=(s.numel,))
    strides = tuple(st * s.dtype.itemsize for st in t.stride)
    view = np.lib.stride_tricks.as_strided(storage[t.offset:], shape=t.size, strides=strides, writeable=False)
    return np.array(view, order="C")

  return TensorRef(t.size, s.dtype, load)
