# Two commands for a fresh machine: `make report` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev
PROFILE ?= default
# The time PROFILE=decide may take (its stages stop cleanly within it)
BUDGET ?= 60m
# The data folder, absolute so that notebooks executed from notebooks/ find it too.
LENET_DATA ?= $(CURDIR)/data
export LENET_DATA

REPORT_ARGS := --profile $(PROFILE) $(if $(PRESET),--preset $(PRESET)) $(if $(ONLY),--only $(ONLY)) \
	$(if $(JOBS),--jobs $(JOBS)) $(if $(THREADS),--threads $(THREADS)) $(if $(FORCE),--force) \
	$(if $(EXECUTOR),--executor $(EXECUTOR)) \
	$(if $(SCHEDULER),--scheduler $(SCHEDULER)) $(if $(filter decide,$(PROFILE)),--budget $(BUDGET))

.PHONY: report test browser lab bench bench-tricks notebooks expected list venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (lenet)" >/dev/null
	touch $(STAMP)

venv: $(STAMP)

report: $(STAMP)  ## run every notebook over its params/ matrix, then outputs/report.html
	$(PY) -m lenet_lib report $(REPORT_ARGS)

# A headless Chromium for the test that opens report.html (tests/fixtures/browser.py): Debian's package, where
# apt-get runs as root; elsewhere that test skips and says why. Never fails the build.
browser:  ## install a headless Chromium for the report's browser test (Debian's chromium)
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null \
		|| { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get update -qq \
			&& DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; } \
		|| echo "make browser: no Chromium installed (needs apt-get as root); the report's browser test will skip"

# One test process per CPU (pytest-xdist), each on one BLAS/OpenMP thread: the tests train many tiny models,
# where a thread pool costs more than it gives, and two pools on the same cores spin against each other.
# --dist loadscope keeps each notebook's cells (nbval) and each test module on one process, in order.
test: $(STAMP) browser  ## unit tests, runner tests, and nbval on the notebooks' stored outputs
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -n auto --dist loadscope tests notebooks --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg \
		--ignore=notebooks/summary.ipynb -p no:cacheprovider --durations=15

lab: $(STAMP)  ## JupyterLab on notebooks/ with this venv's kernel
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

bench: $(STAMP)  ## training speed: library path vs torchvision DataLoader (same run), ensembles
	$(PY) -m lenet_lib.bench $(if $(QUICK),--quick)
	@echo "make bench: the recorded figures, and what each change bought, are in docs/speed.md"

# Weighs each training configuration by what the last report in outputs/ spent on it (`make report` first)
bench-tricks: $(STAMP)  ## what each private-API trick of the fast path buys on the last report, in turns
	$(PY) -m lenet_lib.bench.tricks --outputs outputs

notebooks: $(STAMP)  ## regenerate the stored outputs that nbval compares (quick defaults)
	$(PY) -m lenet_lib notebooks $(if $(ONLY),--only $(ONLY))

expected: $(STAMP)  ## re-record tests/expected/quick_report.json (the numbers make test compares), after a deliberate change
	LENET_RECORD_EXPECTED=1 $(PY) -m pytest tests/test_report_numbers.py -p no:cacheprovider -q

list: $(STAMP)  ## notebooks, profiles, presets and run counts
	$(PY) -m lenet_lib list

clean:  ## remove generated outputs (keeps .venv and data)
	rm -rf outputs .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
