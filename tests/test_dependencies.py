"""Honest dependencies: pyproject.toml declares what genrec imports, and nothing it does not need.

The imports are found by walking the AST of every module under ``genrec/`` (module-level and
function-level imports alike). A declared distribution counts as used when genrec imports its
module, or when it is in :data:`RUNTIME` with the reason genrec needs it without importing it.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]

# distribution -> the module it is imported as, where the two names differ
MODULES = {"scikit-learn": "sklearn", "pyyaml": "yaml", "sentence-transformers": "sentence_transformers"}

# distributions genrec needs without importing them, and why
RUNTIME = {
    "gguf": "transformers reads GGUF weights through it: the embedded SmolLM2-135M ships as a Q4_1 .gguf",
    "httpx": "serving extra: the HTTP client of fastapi.testclient and bench/serve_load.py",
    "deepspeed": "training.deepspeed: TrainingArguments(deepspeed=...) loads it",
}

# imported modules that a declared distribution installs, and which one
PROVIDED_BY = {
    "pydantic": "fastapi",  # request schemas of the HTTP server; a fastapi dependency
    "starlette": "fastapi",  # fastapi's ASGI layer (responses, status codes)
    "datasets": "trl",  # genrec align hands trl's trainers their examples as a datasets.Dataset
}

# imports that name a module of one distribution but need another one installed
IMPORTED_AS = {"torch.utils.tensorboard": "tensorboard"}

TOOLS = {"dev"}  # extras of development tools, not of genrec at run time


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _module(dist: str) -> str:
    return MODULES.get(dist, dist.replace("-", "_"))


def declared() -> tuple[set[str], dict[str, set[str]]]:
    """``(core distributions, {extra: distributions})`` of pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = {k: {_name(r) for r in v} for k, v in project.get("optional-dependencies", {}).items()}
    return {_name(r) for r in project["dependencies"]}, extras


def imported() -> set[str]:
    """Top-level third-party modules imported anywhere in genrec/ (stdlib and genrec left out)."""
    found: set[str] = set()
    for path in (ROOT / "genrec").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found |= {IMPORTED_AS[p] for p in IMPORTED_AS if name == p or name.startswith(p + ".")}
                found.add(name.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"genrec", "__future__"}


def test_every_core_dependency_is_imported_or_a_documented_runtime_need():
    core, _ = declared()
    used = imported()
    unused = sorted(d for d in core if _module(d) not in used and d not in RUNTIME)
    assert not unused, f"declared in [project].dependencies but never imported by genrec: {unused}"


def test_every_extra_is_imported_or_a_documented_runtime_need():
    _, extras = declared()
    used = imported()
    unused = sorted(f"{extra}: {d}" for extra, dists in extras.items() if extra not in TOOLS for d in dists
                    if _module(d) not in used and d not in RUNTIME and d not in PROVIDED_BY.values())
    assert not unused, f"optional dependencies genrec never imports: {unused}"


def test_every_import_is_declared():
    core, extras = declared()
    everything = core | {d for extra, dists in extras.items() if extra not in TOOLS for d in dists}
    modules = {_module(d) for d in everything}
    undeclared = sorted(m for m in imported() if m not in modules and PROVIDED_BY.get(m) not in everything)
    assert not undeclared, f"genrec imports modules no dependency or extra declares: {undeclared}"


def test_allow_lists_are_current():
    core, extras = declared()
    everything = core | {d for dists in extras.values() for d in dists}
    assert set(RUNTIME) <= everything, "RUNTIME names a distribution pyproject.toml no longer declares"
    assert not {_module(d) for d in RUNTIME} & imported(), "RUNTIME names a distribution genrec now imports"
    assert all(reason.strip() for reason in RUNTIME.values())
    assert set(PROVIDED_BY.values()) <= everything
    assert {"scipy", "threadpoolctl", "scikit-learn"} <= core and "pandas" not in core
