# d2pose: the two commands are `make demo` and `make test`; both set the environment up first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST ?= -q

.PHONY: setup test test-fast demo benchmark cuda-check clean

setup:  ## create or refresh .venv (idempotent; fast when nothing changed)
	@bash tools/setup_env.sh

test: setup  ## the whole suite, slow tests included
	$(PY) -m pytest $(PYTEST) tests

test-fast: setup  ## everything but the slow tests
	$(PY) -m pytest $(PYTEST) -m "not slow" tests

demo: setup  ## the main job: the shipped pose model + person detector on whole val images (AP, drawings), then a short Poseur training run on the CPU (loss and AP plot), in under 10 minutes
	$(PY) tools/train_demo.py --output-dir output/demo-$$(date +%Y%m%d-%H%M%S)

BENCHMARK_CONFIGS = $(shell grep -L 'Moved to projects/' configs/*/*.yaml projects/*/configs/*.yaml | grep -v -e /Base- -e /Detectors/)

benchmark: setup  ## operator benchmark, then every shipped config's cost, appended to BENCHMARKS.md
	$(PY) tools/benchmark_ops.py
	$(PY) tools/benchmark.py --repeats 3 --budget 60 --append BENCHMARKS.md --config-file $(BENCHMARK_CONFIGS)

cuda-check: setup  ## prove the CUDA kernels compile (FORCE_CUDA=1) without a GPU
	bash tools/build_cuda_check.sh

clean:  ## remove build products (keeps .venv)
	rm -rf build d2pose/_C*.so *.egg-info
