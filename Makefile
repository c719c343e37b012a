# The two set-up commands of the README: `make demo` and `make test`.
# Both create .venv and install requirements.txt into it on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) evaluate.py --grid --config configs/purify/quick.py --workdir runs/quick

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf runs $(VENV)
