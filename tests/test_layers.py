"""The package layering holds: import-linter's contract (pyproject.toml) passes, no project
import hides inside a function body, and no module is over 600 lines."""
import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kgsim", "proofs", "llm_bridge")


def test_import_linter_contract_is_kept():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(exe).exists():
        pytest.fail("lint-imports is not installed (pip install -e '.[dev]')")
    p = subprocess.run([exe, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0 and "BROKEN" not in p.stdout, p.stdout[-3000:] + p.stderr[-2000:]


def _function_body_project_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").split(".")[0] in PACKAGES):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} from {'.' * node.level}{node.module or ''}")
            elif isinstance(node, ast.Import) and any(a.name.split(".")[0] in PACKAGES for a in node.names):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} import {node.names[0].name}")
    return found


def test_no_project_import_inside_a_function_body():
    found = [hit for pkg in PACKAGES for f in sorted((ROOT / pkg).rglob("*.py"))
             for hit in _function_body_project_imports(f)]
    assert not found, "project imports inside function bodies (hoist them; a cycle means a layer is wrong):\n" + \
        "\n".join(found)


def test_contract_fails_on_an_upward_import(tmp_path):
    """The contract can fail: a copy of the tree with one upward import (world -> study) breaks it."""
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    copy = tmp_path / "tree"
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, copy / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    f = copy / "kgsim" / "world" / "prompts.py"
    f.write_text(f.read_text() + "\nfrom kgsim.study import report  # noqa: E402,F401\n")
    p = subprocess.run([exe, "--config", str(copy / "pyproject.toml")], cwd=copy, capture_output=True, text=True,
                       timeout=300, env={"PYTHONPATH": str(copy), "PATH": str(Path(sys.executable).parent)})
    assert p.returncode != 0 and "BROKEN" in p.stdout, p.stdout[-2000:]


def test_no_module_is_over_600_lines():
    """Issue 10's bound on module size: a module past 600 lines is split by what it does."""
    long = {str(p.relative_to(ROOT)): n for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > 600}
    assert not long, long
