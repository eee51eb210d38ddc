"""Run a module (as ``python -m``) or code, and report which nnabla modules it imported.

    python tests/nnabla_probe.py [--block] [--watch PKG,...] REPORT -m MODULE [ARGS...]
    python tests/nnabla_probe.py [--block] [--watch PKG,...] REPORT -c CODE

Writes to REPORT a JSON list of the nnabla / nnabla_ext modules in ``sys.modules`` when the
run ends (also when it ends with an error or SystemExit; the exit status is kept); with
``--watch`` the modules of those packages instead (dotted names: ``google.protobuf`` watches
that package, not the ``google`` namespace that other distributions share). With
``--block`` every import of nnabla fails as where it is not installed (a Python 3.11+
environment), so a Python 3.8-3.10 environment can show what users there see.
"""
import importlib.abc
import json
import runpy
import sys

NNABLA_PACKAGES = ("nnabla", "nnabla_ext")


class BlockNnabla(importlib.abc.MetaPathFinder):
    """Makes ``import nnabla`` (and its extensions) fail like a missing package."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in NNABLA_PACKAGES:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def loaded_modules(packages=NNABLA_PACKAGES):
    """The modules in ``sys.modules`` that are one of ``packages`` or inside one."""
    return sorted(m for m in sys.modules if any(m == p or m.startswith(p + ".") for p in packages))


def main():
    args = sys.argv[1:]
    if args[0] == "--block":
        sys.meta_path.insert(0, BlockNnabla())
        args = args[1:]
    watched = NNABLA_PACKAGES
    if args[0] == "--watch":
        watched, args = tuple(args[1].split(",")), args[2:]
    report, kind, target, rest = args[0], args[1], args[2], args[3:]
    try:
        if kind == "-m":
            sys.argv = [target] + rest
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            sys.argv = ["-c"] + rest
            exec(compile(target, "<probe>", "exec"), {"__name__": "__main__"})
    finally:
        with open(report, "w") as f:
            json.dump(loaded_modules(watched), f)


if __name__ == "__main__":
    main()
