"""The package's dependencies run one way: every import in hnet/ (top-level or inside a function) goes to
a module of the same layer or a lower one, and no group of modules imports itself round in a circle.

A new module must be placed in `LAYERS` (the test names any module it cannot place).
"""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Lowest first. A module belongs to the longest prefix that matches it.
LAYERS = (
    ("base", ("hnet", "hnet.config", "hnet.configs", "hnet.sharding", "hnet.storage",
              "hnet.data.batch")),  # what everything may read
    ("kernels", ("hnet.kernels",)),  # pure functions: SSD (XLA, Pallas), splash attention
    ("layers", ("hnet.layers",)),  # nnx modules over the kernels
    ("model", ("hnet.model",)),  # the hierarchy, routers, generation, losses, FLOP counts
    ("train", ("hnet.train", "hnet.data")),  # step and loop, optimizer, checkpoints, runs; the input pipeline
    ("tools", ("hnet.evals", "hnet.convert", "hnet.tools")),  # eval.py's commands, weight conversion, calibration
)


def modules() -> dict[str, str]:
  """Dotted name -> file of every module under hnet/."""
  out = {}
  for root, _, files in os.walk(os.path.join(ROOT, "hnet")):
    for f in files:
      if f.endswith(".py"):
        path = os.path.join(root, f)
        name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        out[name.removesuffix(".__init__")] = path
  return out


def layer(name: str) -> int | None:
  best = None
  for i, (_, prefixes) in enumerate(LAYERS):
    for p in prefixes:
      if (name == p or name.startswith(p + ".")) and (best is None or len(p) > best[1]):
        best = (i, len(p))
  return None if best is None or (best[1] == len("hnet") and name != "hnet") else best[0]


def imports(mods: dict[str, str]) -> dict[str, set[tuple[str, int]]]:
  """Module -> the hnet modules it imports, with the line (function-level imports included)."""
  out = {}
  for name, path in mods.items():
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read())
    found = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "hnet":
        for alias in node.names:
          sub = f"{node.module}.{alias.name}"
          found.add((sub if sub in mods else node.module, node.lineno))
      elif isinstance(node, ast.Import):
        found.update((a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "hnet")
    out[name] = {(t, line) for t, line in found if t != name and t in mods}
  return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components of more than one module (Tarjan)."""
  index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

  def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in graph.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        out.append(sorted(comp))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def test_every_module_has_a_layer():
  unplaced = sorted(m for m in modules() if layer(m) is None)
  assert not unplaced, f"place these modules in LAYERS: {unplaced}"


def test_imports_never_reach_a_higher_layer():
  mods = modules()
  upward = [f"{name} ({LAYERS[layer(name)][0]}) imports {t} ({LAYERS[layer(t)][0]}) at line {line}"
            for name, targets in imports(mods).items() for t, line in sorted(targets)
            if t != "hnet" and layer(t) is not None and layer(name) is not None and layer(t) > layer(name)]
  assert not upward, "\n".join(upward)


def test_no_import_circle():
  graph = {name: {t for t, _ in targets if t != "hnet"} for name, targets in imports(modules()).items()}
  assert not cycles(graph), cycles(graph)


def test_the_checks_catch_what_they_are_for():
  assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
  assert layer("hnet.evals.mc") > layer("hnet.train.trainer") > layer("hnet.model.lm") > layer("hnet.layers.mamba2")
  assert layer("hnet.layers.mamba2") > layer("hnet.kernels.ssd") > layer("hnet.config")
  assert layer("hnet.data.batch") == layer("hnet.sharding") < layer("hnet.data.rows")  # the batch contract
  assert layer("hnet.somewhere_new") is None
