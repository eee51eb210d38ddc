"""The README matches the code: its two commands, CI, and the training flag table."""
import os
import re

from conftest import ROOT, readme_section
from xumx.config import build_parser


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        head = f.read().split("```")[1]
    commands = [ln.split("#")[0].strip() for ln in head.splitlines()[1:] if ln.strip()]
    assert commands == ["make demo", "make test"]
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        assert re.search(r"^make test$", f.read(), re.M)
    with open(os.path.join(ROOT, "Makefile")) as f:
        make = f.read()
    assert re.search(r"^test: setup$", make, re.M) and re.search(r"^demo: setup$", make, re.M)


def test_training_flag_table_matches_the_parser():
    rows = [ln for ln in readme_section("Training").splitlines() if ln.startswith("| `-")]
    documented = {tuple(f.strip(" `") for f in ln.split("|")[1].split(",")) for ln in rows}
    actions = [a for a in build_parser("train")._actions if a.dest != "help"]
    assert documented == {tuple(a.option_strings) for a in actions}
