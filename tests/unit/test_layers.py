"""The layers of docs/architecture.md, enforced: a module imports only from its own layer or
below (function-local imports included), and nothing above the backend layer talks to
Docker or looks a node's namespace up in /proc. Each rule is attacked first."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "rangectl"

#: (layer, module prefixes), bottom up; docs/architecture.md has the same table
LAYERS: list[tuple[int, tuple[str, ...]]] = [
    (0, ("rangectl", "rangectl.errors", "rangectl.labels", "rangectl.paths", "rangectl.store")),
    (1, ("rangectl.scenario", "rangectl.graph", "rangectl.i18n")),
    (2, ("rangectl.plan", "rangectl.state", "rangectl.answers", "rangectl.solution")),
    (3, ("rangectl.netns", "rangectl.rtnetlink", "rangectl.arp", "rangectl.backend")),
    (4, ("rangectl.traffic", "rangectl.scoring")),
    (5, ("rangectl.drill",)),
    (6, ("rangectl.access",)),
    (7, ("rangectl.report", "rangectl.ranges", "rangectl.selftest", "rangectl.evidence", "rangectl.cmdlog")),
    (8, ("rangectl.commands", "rangectl.cli")),
]
BACKEND_LAYER = 3


def layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for layer, prefixes in LAYERS:
        for p in prefixes:
            if module == p or module.startswith(p + "."):
                if best is None or len(p) > best[0]:
                    best = (len(p), layer)
    return None if best is None else best[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(source: str, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import in ``source``, nested ones included."""
    out = []
    package = module if module.count(".") == 0 else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            if base == "rangectl" or (base.startswith("rangectl.") and layer_of(base) == 0 and base.count(".") == 0):
                # `from rangectl import x`: x may be a module
                out += [(node.lineno, f"rangectl.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, base))
    return out


def violations(source: str, module: str) -> list[str]:
    mine = layer_of(module)
    assert mine is not None, f"{module} is in no layer: add it to LAYERS and docs/architecture.md"
    found = []
    for line, target in imports(source, module):
        if target.startswith("rangectl"):
            theirs = layer_of(target)
            if theirs is not None and theirs > mine:
                found.append(f"{module}:{line} imports {target} (layer {theirs} > {mine})")
        if mine > BACKEND_LAYER and (target == "docker" or target.startswith("docker.")):
            found.append(f"{module}:{line} imports the Docker SDK above the backend layer")
    if mine > BACKEND_LAYER and "/ns/net" in source:
        found.append(f"{module}: names a /proc namespace path above the backend layer")
    return found


def all_modules() -> list[tuple[str, str]]:
    return [(module_name(p), p.read_text()) for p in sorted(PKG.rglob("*.py"))]


def test_every_module_has_a_layer():
    missing = [m for m, _ in all_modules() if layer_of(m) is None]
    assert not missing, f"modules in no layer: {missing}"


def test_no_module_imports_from_a_layer_above_it():
    found = [v for m, src in all_modules() for v in violations(src, m)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    ("module", "source", "what"),
    [
        ("rangectl.scenario.validate", "from rangectl.traffic.generators import GENERATORS\n", "layer 4 > 1"),
        ("rangectl.scenario.validate", "def f():\n    from rangectl.solution import x\n", "layer 2 > 1"),
        ("rangectl.store", "import rangectl.drill.runner\n", "layer 5 > 0"),
        ("rangectl.backend.docker", "from rangectl.drill import inject\n", "layer 5 > 3"),
        ("rangectl.access.install", "from rangectl import ranges\n", "layer 7 > 6"),
        ("rangectl.drill.wiring", "import docker\n", "Docker SDK"),
        ("rangectl.drill.inject", "p = f'/proc/{pid}/ns/net'\n", "/proc namespace"),
        ("rangectl.traffic.base", "from ..drill import runner\n", "layer 5 > 4"),
    ],
)
def test_the_layer_rule_catches_an_upward_import(module, source, what):
    found = violations(source, module)
    assert found and what in found[0]


def test_allowed_imports_pass():
    assert violations("from rangectl.plan import Plan\nfrom rangectl.store import EventStore\n", "rangectl.drill.runner") == []
    assert violations("from rangectl.backend.nodeexec import node_job\n", "rangectl.traffic.jobs") == []
    assert violations("import docker\n", "rangectl.backend.docker") == []
