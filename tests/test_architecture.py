"""The project's shape, checked: layers that only point down, no import cycles, one source for
the served interface, torch-free serving code, and a `server` mark on every test that starts one."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from hyperthumbnail import interface
from hyperthumbnail.serving.repository import template_dir

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hyperthumbnail"
# The core: what runs without Triton, a client, the CLI or the benchmarks.
CORE = ("model", "codec", "runtime", "export", "training", "pipeline", "ratecontrol", "optimize", "metrics",
        "evaluation", "weights", "interface")
UPPER = ("serving", "client", "cli", "benchmarks", "viewer")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every project module `path` imports, function-level imports included."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            # `from pkg import name`: the submodule pkg.name if there is one, else pkg itself
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` of a non-module attribute
                target = target.rpartition(".")[0]
            if target.startswith("hyperthumbnail"):
                found.add(target)
    return found - {name}


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def layer(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_core_never_imports_the_layers_above():
    wrong = [f"{module} -> {target}" for module, targets in import_graph().items()
             if layer(module) in CORE and not module.endswith("__main__")  # an entry point may
             for target in targets if layer(target) in UPPER]
    assert not wrong, "core modules import serving/client/cli/benchmarks:\n" + "\n".join(sorted(wrong))


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    cycles, state = [], {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]) if nxt in path else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_function_level_imports():
    graph = import_graph()
    assert "hyperthumbnail.pipeline" in graph["hyperthumbnail.cli.options"]  # imported inside make_pipeline
    assert "hyperthumbnail.codec.steps" in graph["hyperthumbnail.serving.backends"]  # `from ..codec import steps`


@pytest.mark.parametrize("config", sorted(p.parent.name for p in template_dir().glob("*/config.pbtxt")))
def test_every_config_matches_the_interface(config):
    """Each model_repository/*/config.pbtxt says what hyperthumbnail.interface says, field by field."""
    parsed = text_format.Parse((template_dir() / config / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert parsed.name == config
    spec = interface.MODELS[config]
    assert parsed.max_batch_size == spec.max_batch_size == interface.MAX_BATCH

    def tensors(items) -> list[tuple]:  # (outputs have no `optional` field)
        return [(t.name, model_config_pb2.DataType.Name(t.data_type), tuple(t.dims), getattr(t, "optional", False))
                for t in items]

    assert tensors(parsed.input) == [(t.name, t.data_type, t.dims, t.optional) for t in spec.inputs]
    assert tensors(parsed.output) == [(t.name, t.data_type, t.dims, t.optional) for t in spec.outputs]
    steps = [s.model_name for s in parsed.ensemble_scheduling.step]
    assert all(step in interface.MODELS for step in steps)


def test_the_interface_names_every_template():
    assert set(interface.MODELS) == {p.parent.name for p in template_dir().glob("*/config.pbtxt")}
    assert set(interface.ENSEMBLES) <= set(interface.MODELS) and set(interface.NEURAL_MODELS) <= set(interface.MODELS)
    json_format.MessageToDict(model_config_pb2.ModelConfig())  # the parser the tests rely on is importable


def test_serving_code_leaves_torch_unimported():
    """The GPU container runs the Python-backend models without torch."""
    code = ("import sys, types\n"
            "sys.modules['triton_python_backend_utils'] = types.ModuleType('triton_python_backend_utils')\n"
            "import hyperthumbnail.interface, hyperthumbnail.serving.backends, hyperthumbnail.serving.repository\n"
            "import hyperthumbnail.serving.server_process, hyperthumbnail.client\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def _calls(node: ast.AST) -> set[str]:
    """Names of the functions and classes a piece of code calls."""
    return {getattr(c.func, "id", getattr(c.func, "attr", "")) for c in ast.walk(node) if isinstance(c, ast.Call)}


def test_every_test_that_starts_a_server_is_marked():
    """`-m 'not server'` must leave out everything that starts a tritonserver."""
    unmarked = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        tree = ast.parse(path.read_text())
        module_marked = any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
                            and "server" in ast.unparse(n.value) for n in tree.body)
        starters = {"TritonServer"} | {n.name for n in tree.body if isinstance(n, ast.FunctionDef)
                                       and not n.name.startswith("test_") and "TritonServer" in _calls(n)}
        for node in tree.body:
            if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test_")):
                continue
            starts = bool(starters & _calls(node)) or "triton_server" in [a.arg for a in node.args.args]
            marked = any("mark.server" in ast.unparse(d) for d in node.decorator_list)
            if starts and not (marked or module_marked):
                unmarked.append(f"{path.name}::{node.name}")
    assert not unmarked, f"tests that start a server without @pytest.mark.server: {unmarked}"
