# The course's two commands: `make lab` (set-up, then JupyterLab) and `make test`
# (set-up, then ruff, pytest and every notebook on the CPU in small mode, offline).
# The set-up installs torch==2.13.0 first through constraints.txt: an unpinned torch
# in a fresh venv would pull a CUDA build of several GB onto a CPU-only machine.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lorakit-installed
TEST_ENV := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 LORAKIT_MODE=small LORAKIT_TEST=1 MPLBACKEND=Agg

.PHONY: setup lab test lint pytest notebooks test-ipywidgets7 clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (lorakit)" >/dev/null
	touch $@

# Jupyter refuses to run as root (Docker, Colab-like boxes) without --allow-root.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)

lab: setup
	$(BIN)/jupyter lab $(ROOT_FLAG) notebooks/

lint: setup
	$(BIN)/ruff check lorakit tests benchmarks

pytest: setup
	$(TEST_ENV) $(BIN)/python -m pytest tests

notebooks: setup
	$(TEST_ENV) $(BIN)/python -m pytest --nbval-lax --nbval-cell-timeout=600 -p no:cacheprovider notebooks

test: lint pytest notebooks

# Colab ships ipywidgets 7.7: the widget tests again with it, installed beside the venv (not part of `make test`).
IPYW7 := $(VENV)/ipywidgets7
test-ipywidgets7: setup
	test -d $(IPYW7) || $(BIN)/python -m pip install --quiet --no-deps --target $(IPYW7) \
		ipywidgets==7.7.5 widgetsnbextension==3.6.10 jupyterlab_widgets==1.1.11 ipython_genutils==0.2.0
	PYTHONPATH=$(IPYW7) $(TEST_ENV) $(BIN)/python -m pytest -p no:cacheprovider tests/test_widgets.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
