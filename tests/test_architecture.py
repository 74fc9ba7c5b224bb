"""The folder tree is the architecture (docs/architecture.md): this test reads every module of peft3d/ with
``ast`` (imports inside functions included) and fails on an import cycle between files, on an import that
breaks the layering, and on a method name written outside methods/ or a backbone name written inside it."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from peft3d.backbones import BACKBONES
from peft3d.methods import METHODS
from peft3d.methods.any2point.config import ARM_GEOMETRY

PKG = Path(__file__).resolve().parents[1] / "peft3d"
HARNESS = {"cli", "grids", "schedule", "training", "tuning", "analysis", "reporting"}
MODEL_SIDE = {"methods", "backbones", "datasets", "models"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def resolve(name: str) -> str | None:
    """The peft3d module a dotted import lands in (``from peft3d.x import y`` may name module ``y``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for n in names:
            target = resolve(n) if n.startswith("peft3d") else None
            if target and target != module:
                out.add(target)
    return out


GRAPH = {m: imports_of(m) for m in MODULES}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_graph_sees_local_imports():
    # a function-level import must count (protocols imports geometry's FPS inside fps_indices)
    assert "peft3d.models.geometry" in GRAPH["peft3d.datasets.protocols"]
    assert "peft3d.cli.app" in GRAPH["peft3d.cli.run"]


def test_no_import_cycles_between_files():
    import graphlib

    sorter = graphlib.TopologicalSorter(GRAPH)
    try:
        sorter.prepare()
    except graphlib.CycleError as e:
        pytest.fail(f"import cycle: {' -> '.join(e.args[1])}")


def test_cli_sub_commands_never_import_each_other():
    commands = {m for m in MODULES if m.startswith("peft3d.cli.") and m != "peft3d.cli.app"}
    for m in commands:
        assert not GRAPH[m] & commands, f"{m} imports {sorted(GRAPH[m] & commands)}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) in MODEL_SIDE))
def test_model_side_never_imports_the_harness(module):
    bad = sorted(t for t in GRAPH[module] if layer(t) in HARNESS)
    assert not bad, f"{module} imports harness layer(s): {bad}"


# The layers, lowest first: a module imports its own layer and those before it, never one after it. Models sit
# below methods (a method attaches to a model; peft3d.methods.build assembles the two), training below schedule
# (the scheduler runs training in workers; a run's environment capture lives in core). devtools (tools for working
# on peft3d itself, e.g. the generated tables of docs/architecture.md) sits on top: nothing of the package uses it.
LAYERS = ["core", "backbones", "models", "datasets", "methods", "grids", "training", "schedule", "analysis",
          "reporting", "tuning", "cli", "devtools"]
TOP = {"", "__main__"}  # peft3d/__init__.py and ``python -m peft3d``


def upward_imports(module: str, graph: dict[str, set[str]]) -> list[str]:
    """The imports of ``module`` that land in a layer after its own."""
    here = LAYERS.index(layer(module))
    return sorted(t for t in graph[module] if layer(t) not in TOP and LAYERS.index(layer(t)) > here)


def test_every_folder_has_a_place_in_the_layers():
    assert {layer(m) for m in MODULES} - TOP <= set(LAYERS), "a new folder of peft3d/ needs its place in LAYERS"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) not in TOP))
def test_imports_only_go_down_the_layers(module):
    bad = upward_imports(module, GRAPH)
    assert not bad, f"{module} imports a layer above its own ({' < '.join(LAYERS)}): {bad}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) == "core"))
def test_core_imports_only_core(module):
    bad = sorted(t for t in GRAPH[module] if layer(t) != "core")
    assert not bad, f"{module} imports {bad}"


def string_literals(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def test_no_method_name_outside_methods():
    names = set(METHODS.names())
    hits = [f"{MODULES[m].relative_to(PKG.parent)}:{line} {value!r}" for m in MODULES if layer(m) != "methods"
            for line, value in string_literals(MODULES[m]) if value in names]
    assert not hits, "method names outside methods/ (read them from a grid, the CLI or the registry):\n" + \
        "\n".join(hits)


def test_no_backbone_name_inside_methods():
    # The released Any2Point arms (ARM_GEOMETRY keys, what a backbone declares as ``a2p_settings``) are named
    # after the backbone each was released for: they are method data, looked up by declaration, never used to
    # recognise the running backbone.
    names = set(BACKBONES.names()) - set(ARM_GEOMETRY)
    hits = [f"{MODULES[m].relative_to(PKG.parent)}:{line} {value!r}" for m in MODULES if layer(m) == "methods"
            for line, value in string_literals(MODULES[m]) if value in names]
    assert not hits, "backbone names inside methods/ (declare what the method needs instead):\n" + "\n".join(hits)
    arms = [f"{MODULES[m].relative_to(PKG.parent)}:{line}" for m in MODULES if layer(m) == "methods"
            and m != "peft3d.methods.any2point.config"
            for line, value in string_literals(MODULES[m]) if value in ARM_GEOMETRY]
    assert not arms, f"released-arm names outside the Any2Point preset data: {arms}"


def test_the_checks_catch_what_they_look_for(tmp_path):
    """The detectors themselves: a cycle, a layering break and a method name are found in a toy graph."""
    import graphlib

    sorter = graphlib.TopologicalSorter({"a": {"b"}, "b": {"a"}})
    with pytest.raises(graphlib.CycleError):
        sorter.prepare()
    toy = tmp_path / "toy.py"
    toy.write_text('"""doc mentions lora"""\nX = "lora"\ndef f():\n    from peft3d.cli import app\n')
    assert (2, "lora") in string_literals(toy) and (1, "doc mentions lora") not in string_literals(toy)
    toy_graph = {"peft3d.models.build": {"peft3d.methods", "peft3d.core.spec"},
                 "peft3d.training.train": {"peft3d.schedule.environment", "peft3d.models.model"},
                 "peft3d.methods.build": {"peft3d.models.build"}}
    assert upward_imports("peft3d.models.build", toy_graph) == ["peft3d.methods"]
    assert upward_imports("peft3d.training.train", toy_graph) == ["peft3d.schedule.environment"]
    assert upward_imports("peft3d.methods.build", toy_graph) == []
