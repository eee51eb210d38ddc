"""The layout holds the architecture: read from the code's own imports (module level and inside
functions alike), the package's modules import each other without a cycle, nnabla is imported
only inside xumx/training/, and only the entry point of training and the reference backend's
one switch reach into xumx/training/ from outside it. A module over MAX_LINES lines says why
at its top."""
import ast
import os

import pytest

from conftest import ROOT

PACKAGE = os.path.join(ROOT, "xumx")
TRAINING = "xumx.training"
#: The only modules outside xumx/training that may import from it, and what they may import:
#: the training command, and Separator.load(backend="nnabla") (the reference backend).
INTO_TRAINING = {"xumx.train": {"xumx.training.backend", "xumx.training.trainer"},
                 "xumx.separator": {"xumx.training.reference"},
                 # the demo checks nnabla before its first step (issue 22 item 11)
                 "xumx.demo": {"xumx.training.backend"}}
MAX_LINES = 500
#: what a module over MAX_LINES lines says at its top to be allowed
LONG_REASON = "Why this module is long:"


def modules():
    """{module name: path} of every module of the package."""
    out = {}
    for folder, _, names in os.walk(PACKAGE):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return out


def imports_of(name: str, path: str, known) -> set:
    """The modules (of the package, or top-level third-party names) that ``name`` imports."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for alias in node.names:   # "from . import x" imports the module x
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
    return found


@pytest.fixture(scope="module")
def graph():
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}, known


def test_no_cycles_between_modules(graph):
    edges, known = graph
    inner = {m: {t for t in targets if t in known and t != m} for m, targets in edges.items()}
    # a package's __init__ re-exporting its own modules is not a cycle of the design
    inner = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in inner.items()}
    seen, stack, cycles = set(), [], []

    def visit(m):
        if m in stack:
            cycles.append(stack[stack.index(m):] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for t in sorted(inner[m]):
            visit(t)
        stack.pop()
    for m in sorted(inner):
        visit(m)
    assert cycles == []


def test_nnabla_only_inside_training(graph):
    edges, _ = graph
    outside = {m: sorted(t for t in ts if t.split(".")[0] == "nnabla")
               for m, ts in edges.items() if not m.startswith(TRAINING)}
    assert {m: ts for m, ts in outside.items() if ts} == {}
    assert any(t.split(".")[0] == "nnabla" for m, ts in edges.items() if m.startswith(TRAINING)
               for t in ts)   # the check sees nnabla where it is


def test_only_training_and_the_reference_switch_reach_into_training(graph):
    edges, _ = graph
    reach = {m: {t for t in ts if t == TRAINING or t.startswith(TRAINING + ".")}
             for m, ts in edges.items() if not m.startswith(TRAINING)}
    reach = {m: ts for m, ts in reach.items() if ts}
    assert reach == INTO_TRAINING


def test_long_modules_say_why(graph):
    _, known = graph
    long = {}
    for name, path in known.items():
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if text.count("\n") > MAX_LINES and LONG_REASON not in text[:3000]:
            long[name] = text.count("\n")
    assert long == {}
