# make run   : build, validate the theory (report in out/validate/), a short DALS demo, then a short training
#              comparison on Fashion-MNIST (synthetic data if it is not installed), results in out/train/
# make test  : build and run the test suite
# make bench : build and run the step-throughput benchmark
# Each target bootstraps .venv (torch==2.13.0 + requirements.txt) and builds the extension in place.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEPS := $(VENV)/.deps-installed
EXT := $(VENV)/.ext-built
SOURCES := setup.py $(shell find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cuh' -o -name '*.cu')

.PHONY: run test bench build clean

run: $(EXT)
	$(PY) -m torch_layerlr validate --out out/validate
	$(PY) -m torch_layerlr demo
	$(PY) -m torch_layerlr train --dataset auto --model mlp --optimizer sgdr,adamw,lars,dals,dals-fast \
		--epochs 3 --seeds 1 --no-resume --out out/train
	@echo "Validation report: out/validate/report.md (also report.json and the fig*.png figures)"
	@echo "Training comparison: out/train/table.md (also results.json and curves.png)"

test: $(EXT)
	$(PY) -m pytest -q tests

bench: $(EXT)
	$(PY) benchmarks/step_throughput.py

build: $(EXT)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(DEPS): requirements.txt | $(PY)
	$(PY) -m pip install -q torch==2.13.0 -r requirements.txt
	touch $@

# The package is used from the source tree: a .pth file puts the repository on the venv's path.
$(EXT): $(DEPS) $(SOURCES)
	MAX_JOBS=2 $(PY) setup.py -q build_ext --inplace
	$(PY) -c "import os, site; open(os.path.join(site.getsitepackages()[0], 'torch_layerlr-dev.pth'), 'w').write(os.getcwd() + '\\n')"
	touch $@

clean:
	rm -rf build torch_layerlr/*.so $(EXT)
