"""Imports point one way (DESIGN.md "Layers", docs/structure.md): no upward import, no cycle.

A module imports only from its own layer or below, and the project's modules import each other
without a cycle.

The imports are read from the source (ast), every one of them: at module level, inside functions
and under ``TYPE_CHECKING``, so an import moved into a function to dodge a cycle is caught too.
Imports of third-party packages are not checked (heavy optional ones, such as onnx, are imported
inside the functions that need them on purpose, so that the core loads without them).
"""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("datafree", "generators")

# Lowest first. A pattern names a module (``datafree.cards``) or a package and everything in it
# (``datafree.models*``); an exact name wins over a pattern.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "core",
        (
            "datafree.errors",
            "datafree.registry",
            "datafree.progress",
            "datafree.utils",
            "datafree.distributed",
            "datafree.normalize",
            "datafree.stats",
            "datafree.resume",
            "datafree.metrics",
            "datafree.precision",
            "datafree.validate",
            "datafree.quality",
            "datafree.malloc",
            "datafree.ema",
            "datafree.replay",
        ),
    ),
    (
        "losses, hooks, io, models",
        (
            "datafree.losses",
            "datafree.generator_losses",
            "datafree.hooks",
            "datafree.bnstats_loss",
            "datafree.bnfold",
            "datafree.augment",
            "datafree.models*",
            "datafree.reshape",
            "datafree.cards",
            "datafree.dataset",
            "datafree.data*",
            "datafree.evaluate",
            "datafree.profile",
            "datafree.train",
            "datafree.quant.fakequant",
            "datafree.quant.fold",
            "datafree.quant.calibration",
            "datafree.quant.qmodel",
            "datafree.quant.int8",
            "datafree.quant.int8_artefact",
            "datafree.checkpoints",
            "datafree.card_maker",
            "datafree.rules",
            "datafree.plot",
        ),
    ),
    ("generators", ("generators*",)),
    ("kd, sources", ("datafree.distill", "datafree.sources", "datafree.synthesis")),
    ("plan", ("datafree.plan", "datafree.outputs", "datafree.online_train", "datafree.config")),
    (
        "jobs",
        (
            "datafree.pipeline",
            "datafree.deploy",
            "datafree.prune*",
            "datafree.quant",
            "datafree.quant.api",
            "datafree.quant.qat",
        ),
    ),
    ("front", ("cli", "datafree")),  # the command and the package's facade (datafree/__init__.py)
]


def _modules() -> dict[str, Path]:
    mods = {"cli": ROOT / "cli.py"}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` of ``module``: an exact name first, else the package pattern."""
    for exact in (True, False):
        for i, (_, patterns) in enumerate(LAYERS):
            for p in patterns:
                if module == p if exact else (p.endswith("*") and fnmatch.fnmatch(module, p[:-1] + "*")):
                    return i
    raise KeyError(f"no layer claims module {module!r}: add it to LAYERS in tests/test_layers.py")


def _target(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    is_pkg = MODULES[module].name == "__init__.py"
    base = module.split(".")
    base = base if is_pkg else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _own(name: str) -> str | None:
    """The project module ``name`` refers to (a module, or the package holding an imported name)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str) -> set[str]:
    """The project modules ``module`` imports, anywhere in its source."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _target(module, node)
            names = [f"{base}.{a.name}" for a in node.names]  # a submodule, or a name in ``base``
        else:
            continue
        out.update(t for t in map(_own, names) if t is not None and t != module)
    return out


GRAPH = {m: imports_of(m) for m in MODULES}


def test_every_module_has_a_layer():
    for m in MODULES:
        layer_of(m)


def test_imports_point_down():
    upward = [
        f"{m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]})"
        for m, targets in GRAPH.items()
        for t in sorted(targets)
        if layer_of(t) > layer_of(m)
    ]
    assert not upward, "\n".join(upward)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return stack[stack.index(t) :] + [t]
            if t not in state and (c := visit(t)) is not None:
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)) is not None:
            return c
    return None


def test_no_import_cycles():
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH) or [])


@pytest.mark.parametrize(
    ("graph", "cycle"),
    [({"a": {"b"}, "b": {"a"}}, True), ({"a": {"b"}, "b": {"c"}, "c": set()}, False), ({"a": {"a"}}, True)],
)
def test_the_checks_can_fail(graph, cycle):
    assert (find_cycle(graph) is not None) is cycle
    # and an upward import is seen: generators importing the KD stage would be one
    assert layer_of("datafree.distill") > layer_of("generators.base")
