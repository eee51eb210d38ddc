# The two commands of the README. Both set everything up first (scripts/setup.sh).
PY := .venv/bin/python

.PHONY: setup demo test
setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m xumx.demo --workdir demo-out

test: setup
	$(PY) -m pytest -q tests
