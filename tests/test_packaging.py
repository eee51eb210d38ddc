"""environment-cpu.yml and environment-gpu.yml list the dependencies of setup.py."""
import ast
import os
import re

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def install_requires():
    """INSTALL_REQUIRES of setup.py, read without running setup.py."""
    tree = ast.parse(open(os.path.join(ROOT, "setup.py")).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "INSTALL_REQUIRES" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py has no INSTALL_REQUIRES = [...] list")


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


def test_environments_list_the_setup_py_dependencies():
    wanted = {name(r) for r in install_requires()}
    assert "nnabla" in wanted and "museval" in wanted
    for flavour, extra in (("cpu", set()), ("gpu", {"nnabla-ext-cuda120"})):
        env, conda, pip = environment(flavour)
        assert env["name"] == f"xumx-{flavour}"
        assert "python=3.10" in conda and "pip" in conda
        assert "-e ." in pip, "the package itself, from the repository"
        listed = [name(r) for r in pip if not r.startswith("-")]
        assert len(listed) == len(set(listed)), f"{flavour}: a dependency is listed twice"
        assert set(listed) == wanted | extra, (
            f"environment-{flavour}.yml differs from setup.py: missing "
            f"{sorted((wanted | extra) - set(listed))}, extra {sorted(set(listed) - wanted - extra)}")
