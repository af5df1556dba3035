# make run   : build, validate the theory (report in out/validate/), a short DALS demo, then a short training
#              comparison on Fashion-MNIST (synthetic data if it is not installed), results in out/train/
# make test  : build and run the test suite
# make bench : build and run the step-throughput benchmark
# make asan-test : the test suite against an AddressSanitizer + UBSan build of the extension (build/asan/)
# make fuzz  : the op-boundary fuzz with >= 5000 examples (LAYERLR_FUZZ_EXAMPLES to change)
# make cpp   : configure, build and install the C++ library (build/cpp, installed into install/)
# make cpp-example : build the C++ example against the installed package and train 1 epoch
# Each target bootstraps .venv (torch==2.13.0 + requirements.txt) and builds the extension in place.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEPS := $(VENV)/.deps-installed
EXT := $(VENV)/.ext-built
SOURCES := setup.py $(shell find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cuh' -o -name '*.cu')

.PHONY: run test bench build clean asan-test fuzz cpp cpp-deps cpp-example

run: $(EXT)
	$(PY) -m torch_layerlr validate --out out/validate
	$(PY) -m torch_layerlr demo
	$(PY) -m torch_layerlr train --dataset auto --model mlp --optimizer sgdr,adamw,lars,dals,dals-fast \
		--epochs 3 --seeds 1 --no-resume --out out/train
	@echo "Validation report: out/validate/report.md (also report.json and the fig*.png figures)"
	@echo "Training comparison: out/train/table.md (also results.json and curves.png)"

test: $(EXT) cpp
	$(PY) -m pytest -q tests
	ctest --test-dir $(CPP_BUILD) --output-on-failure -j2

bench: $(EXT)
	$(PY) benchmarks/step_throughput.py

build: $(EXT)

# NOTE: [sanitizer build] (setup.py). The instrumented extension goes into build/asan/pkg/torch_layerlr (a copy
# of the package), which PYTHONPATH puts before the source tree. Python is not instrumented, so the runtimes are
# preloaded; leaks are not reported (CPython keeps its objects alive at exit); any other report aborts.
ASAN_PKG := build/asan/pkg
ASAN_TESTS ?= tests --ignore-glob="tests/test_cpp_*.py"  # the C++ API tests run LibTorch programs, not the extension
asan-test: $(DEPS)
	LAYERLR_SANITIZE=1 MAX_JOBS=2 $(PY) setup.py -q build_ext --build-lib build/asan/lib --build-temp build/asan/tmp
	rm -rf $(ASAN_PKG) && mkdir -p $(ASAN_PKG)
	cp -r torch_layerlr $(ASAN_PKG)/ && rm -f $(ASAN_PKG)/torch_layerlr/_C*.so
	cp build/asan/lib/torch_layerlr/_C*.so $(ASAN_PKG)/torch_layerlr/
	LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	LAYERLR_EXPECT_SANITIZER=1 PYTHONPATH=$(CURDIR)/$(ASAN_PKG) $(PY) -P -m pytest -q -p no:cacheprovider $(ASAN_TESTS)

fuzz: $(EXT)
	LAYERLR_FUZZ_EXAMPLES=$${LAYERLR_FUZZ_EXAMPLES:-5000} $(PY) -m pytest -q -s tests/test_fuzz_op.py

# ---- the C++ library (CMakeLists.txt), its tests and example -------------------------------------------------
CPP_BUILD := build/cpp
CPP_INSTALL := install
FASHION_MNIST ?= /usr/share/datasets/fashion-mnist
FASHION_IDX := build/fashion-mnist-idx

cpp-deps:
	@bash cmake/install-build-deps.sh

cpp: $(DEPS) cpp-deps
	mkdir -p $(CPP_BUILD)
	cmake -S . -B $(CPP_BUILD) -DCMAKE_BUILD_TYPE=Release -DLAYERLR_PYTHON=$(CURDIR)/$(PY) \
		-DCMAKE_INSTALL_PREFIX=$(CURDIR)/$(CPP_INSTALL) > $(CPP_BUILD)/configure.log || { cat $(CPP_BUILD)/configure.log; exit 1; }
	cmake --build $(CPP_BUILD) -j2
	cmake --install $(CPP_BUILD) > /dev/null

# LibTorch's MNIST reader takes the IDX files uncompressed: Debian ships them gzipped. The example's OpenMP threads
# wait passively (as tests/conftest.py sets for the suite): spinning costs several times the run on a shared box.
$(FASHION_IDX)/.done:
	mkdir -p $(FASHION_IDX)
	for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do \
		gunzip -c $(FASHION_MNIST)/$$f.gz > $(FASHION_IDX)/$$f || exit 1; done
	touch $@

cpp-example: cpp $(FASHION_IDX)/.done
	cmake -S examples/cpp -B build/cpp-example -DCMAKE_BUILD_TYPE=Release \
		-DCMAKE_PREFIX_PATH="$(CURDIR)/$(CPP_INSTALL);$$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')" > /dev/null
	cmake --build build/cpp-example -j2
	OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-PASSIVE} build/cpp-example/train_fashion_mnist --optimizer dals --epochs 1 \
		--data $(FASHION_IDX)

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
