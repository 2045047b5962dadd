"""The package layout's rules (docs/architecture.md): import layers, no cycles, small modules.

- the import-linter contracts of pyproject.toml hold (layers, forbidden imports);
- no import cycle between any two genrec modules;
- loading the recommender imports neither training code, nor the Trainer, nor the baselines,
  nor the item-tokenizer builder;
- no module of genrec/ is longer than MAX_LINES;
- the benchmarks import no test module.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 420


def test_import_contracts_hold():
    pytest.importorskip("importlinter", reason="import-linter is in the dev extra: pip install -e '.[dev]'")
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter (dev extra)")
    g = grimp.build_graph("genrec", cache_dir=None)
    # A package's __init__ is its own module; edges between a package and its children are kept.
    graph = {m: set(g.find_modules_directly_imported_by(m)) for m in g.modules}
    assert _cycles(graph) == []


def test_recommender_loads_without_training_baselines_or_builder():
    forbidden = ("genrec.training", "genrec.baselines", "genrec.item_tokenizer.build", "transformers.trainer")
    code = ("import json, sys; import genrec.inference.recommender; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('genrec', 'transformers.trainer')))))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          check=True)
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    bad = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in forbidden)]
    assert bad == [], f"importing the recommender loaded {bad}"
    assert "genrec.inference.recommender" in loaded


def test_modules_stay_small():
    long = {str(p.relative_to(REPO)): n for p in sorted((REPO / "genrec").rglob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}, f"modules over {MAX_LINES} lines: {long}; split them"


def test_benchmarks_import_no_test_module():
    pattern = re.compile(r"^\s*(from|import)\s+tests\b", re.MULTILINE)
    offenders = [p.name for p in sorted((REPO / "bench").glob("*.py")) if pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == [], f"bench scripts importing from tests/: {offenders}; use genrec.testing"
