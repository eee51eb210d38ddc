# The two commands of the README. Both set everything up first (scripts/setup.sh).
# demo: the whole job offline on a CPU; it needs only .venv (Python 3.8-3.10, nnabla).
# test: the whole suite in .venv, then every test that does not need nnabla (separation, CLI,
# weights, parity, eval, the nnabla boundary) in .venv-latest (the newest CPython and numpy,
# no nnabla).
PY := .venv/bin/python
PY_LATEST := .venv-latest/bin/python

.PHONY: setup demo test
setup:
	@bash scripts/setup.sh $(SETUP_FLAGS)

demo: SETUP_FLAGS := --only-venv
demo: setup
	$(PY) -m xumx.demo --workdir demo-out

test: setup
	$(PY) -m pytest -q tests
	$(PY_LATEST) -m pytest -q -m "not nnabla" tests
