"""The README matches the code: its two commands, CI, its size, and the flag tables of
docs/flags.md (generated from the parsers; the README links them)."""
import argparse
import glob
import os
import re

from conftest import ROOT, flag_rows, readme_section
from xumx.parsing import COMMANDS, build_parser, flags_document

#: The README is read in two minutes: measurements and long tables live in docs/.
README_LIMIT = 15 * 1024


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


def test_readme_says_how_to_run_the_commands_after_set_up():
    """Issue 15: in a fresh shell there is no `python` and python3 finds no xumx; the README
    names the environment, `make setup`, and console scripts that setup.py declares."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    with open(os.path.join(ROOT, "Makefile")) as f:
        assert re.search(r"^setup:", f.read(), re.M)
    with open(os.path.join(ROOT, "setup.py")) as f:
        scripts = re.findall(r'"(xumx-\w+)=xumx\.(\w+):main"', f.read())
    assert scripts and all(f"`{name}`" in readme for name, _ in scripts)
    for text in ("make setup", "source .venv/bin/activate", ".venv/bin/python -m xumx.test"):
        assert text in readme, text


def test_training_flag_table_matches_the_parser():
    documented = set(flag_rows("train"))
    actions = [a for a in build_parser("train")._actions
               if a.dest not in ("help", "version") and a.help != argparse.SUPPRESS]
    assert documented == {tuple(a.option_strings) for a in actions}


def test_flag_document_is_generated_from_the_parsers():
    """docs/flags.md is exactly what scripts/flags_doc.py prints: every command, one format."""
    with open(os.path.join(ROOT, "docs", "flags.md"), encoding="utf-8") as f:
        assert f.read() == flags_document(), "run: python scripts/flags_doc.py > docs/flags.md"
    for command in COMMANDS:
        assert readme_section(f"python -m xumx.{command}", "docs/flags.md")


def test_every_flag_table_is_a_generated_one():
    """A flag table anywhere in the README or docs/ is one of docs/flags.md's (one format,
    generated from the parsers)."""
    generated = flags_document()
    for path in [os.path.join(ROOT, "README.md")] + glob.glob(os.path.join(ROOT, "docs", "*.md")):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for table in re.findall(r"(?m)^\| Flag.*\n(?:\|.*\n?)*", text):
            assert table.strip() in generated, (path, table[:200])


def test_readme_is_short():
    assert os.path.getsize(os.path.join(ROOT, "README.md")) <= README_LIMIT
