# make run   : build, validate the depth-scaling theory (report in out/validate/), then a short DALS demo
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
	@echo "Validation report: out/validate/report.md (also report.json and the fig*.png figures)"

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
