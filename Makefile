# The course's two commands: `make lab` (set-up, then JupyterLab) and `make test`
# (set-up, then ruff, pytest and every notebook on the CPU in small mode, offline).
# The set-up installs torch==2.13.0 first through constraints.txt: the version the course is
# tested with (constraints.txt says how to get PyTorch's small CPU build on Linux).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lorakit-installed
TEST_ENV := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 LORAKIT_MODE=small LORAKIT_TEST=1 MPLBACKEND=Agg

.PHONY: setup lab test lint pytest notebooks assignments release translations test-ipywidgets7 test-browser clean

setup: $(STAMP)

# Set-up prints a line for each of its four steps and pip's own progress: the first run downloads
# the Hugging Face libraries and JupyterLab (a few minutes); later runs find them in pip's cache.
$(STAMP): pyproject.toml constraints.txt
	@echo "==> [1/4] a virtual environment in $(VENV)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "==> [2/4] torch 2.13.0 (CPU build, see constraints.txt)"
	$(BIN)/python -m pip install --progress-bar on -c constraints.txt torch==2.13.0
	@echo "==> [3/4] lorakit and the libraries of the course (diffusers, transformers, PEFT, JupyterLab, ...)"
	$(BIN)/python -m pip install --progress-bar on -c constraints.txt -e '.[dev]'
	@echo "==> [4/4] the Jupyter kernel \"Python 3 (lorakit)\""
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (lorakit)" >/dev/null
	touch $@
	@echo "==> set-up done"

# Jupyter refuses to run as root (Docker, Colab-like boxes) without --allow-root.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)

lab: setup
	$(BIN)/jupyter lab $(ROOT_FLAG) notebooks/

LINTED := lorakit tests benchmarks browser_tests classroom/*.py classroom/uk/*.py docs translations

lint: setup
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

# Two processes (pytest-xdist), one thread each: on a 2-core laptop this halves the wall time, where two
# processes of several threads each would slow each other down. `--dist loadgroup` keeps the tests of
# an xdist_group (the classroom loop) on one worker; `--dist loadfile`, a notebook's cells in order on one kernel.
PARALLEL := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
JOBS ?= 2

pytest: setup
	$(TEST_ENV) $(PARALLEL) $(BIN)/python -m pytest -n $(JOBS) --dist loadgroup tests

notebooks: setup
	$(TEST_ENV) $(PARALLEL) $(BIN)/python -m pytest -n $(JOBS) --dist loadfile --nbval-lax \
		--nbval-cell-timeout=600 -p no:cacheprovider notebooks classroom/source

# The teacher's loop on the sample submissions (part of `make test` too): nbgrader generate_assignment,
# autograde and export in a scratch copy of classroom/, every score asserted (tests/test_classroom.py).
assignments: setup
	$(TEST_ENV) $(BIN)/python -m pytest -p no:cacheprovider tests/test_classroom.py

# The student versions, made from classroom/source by nbgrader (commit them after editing a source),
# and the Ukrainian ones from classroom/uk/source (built by `make translations`).
release: setup
	cd classroom && for a in source/*/; do PATH="$(CURDIR)/$(BIN):$$PATH" ../$(BIN)/nbgrader generate_assignment \
		"$$(basename $$a)" --force --log-level=WARN || exit 1; done; rm -f gradebook.db
	cd classroom/uk && for a in source/*/; do PATH="$(CURDIR)/$(BIN):$$PATH" ../../$(BIN)/nbgrader generate_assignment \
		"$$(basename $$a)" --force --log-level=WARN || exit 1; done; rm -f gradebook.db

# The Ukrainian lessons, notebooks/uk/, from the English ones and translations/uk/*.po: brings each
# catalogue up to date with its lesson (new and changed cells to translate), then builds every lesson
# whose catalogue is complete. tests/project/test_translations.py fails until both are done.
translations: setup
	$(BIN)/python translations/build.py

# `make test` runs the tests and the lessons in one pytest session, so that neither worker waits for
# the other at the end of a phase: each notebook's cells stay on one worker, in order (tests/conftest.py
# puts them in an xdist group). The sample submissions under tests/ are data for the classroom loop.
# It ends with the 15 slowest tests and cells: where to look first when the run gets long.
test: lint
	$(TEST_ENV) $(PARALLEL) $(BIN)/python -m pytest -n $(JOBS) --dist loadgroup --nbval-lax \
		--nbval-cell-timeout=600 -p no:cacheprovider --durations=15 --ignore=tests/submissions \
		tests notebooks classroom/source

# Colab ships ipywidgets 7.7: the widget tests again with it, installed beside the venv (not part of `make test`).
IPYW7 := $(VENV)/ipywidgets7
test-ipywidgets7: setup
	test -d $(IPYW7) || $(BIN)/python -m pip install --quiet --no-deps --target $(IPYW7) \
		ipywidgets==7.7.5 widgetsnbextension==3.6.10 jupyterlab_widgets==1.1.11 ipython_genutils==0.2.0
	PYTHONPATH=$(IPYW7) $(TEST_ENV) $(BIN)/python -m pytest -p no:cacheprovider tests/widgets

# JupyterLab in a real browser (not part of `make test`): lessons 01 and 07 run in headless Chromium,
# their widgets render and their sliders redraw. Needs the system's Chromium (Debian: apt-get install
# chromium; the test skips without it); Playwright comes from the `browser` extra, and its own browser
# download (`playwright install`) is never used.
test-browser: setup
	$(BIN)/python -c "import playwright" 2>/dev/null || \
		$(BIN)/python -m pip install -c constraints.txt -e '.[browser]'
	$(BIN)/python -m pytest -p no:cacheprovider browser_tests

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
