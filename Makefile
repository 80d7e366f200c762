# Two commands on a fresh machine: `make test` and `make demo`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# the CPU build of torch (a plain `torch` pulls a multi-GB CUDA build)
TORCH_PIN := torch==2.13.0

.PHONY: test test-fast demo lint bench bench-quality bench-likelihood clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# one worker per core; each test process uses one torch thread (tests/conftest.py)
test: $(STAMP)
	$(PY) -m pytest -q -n auto

# under a minute: no slow checks, no torchrun/CLI subprocesses (`make test` runs them all)
test-fast: $(STAMP)
	$(PY) -m pytest -q -m 'not slow and not subprocess'

demo: $(STAMP)
	$(VENV)/bin/ddpmkit demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

# `make bench`: our nets against denoising-diffusion-pytorch and diffusers, same size, on this
# machine (docs/benchmarks.md). Its own venv: the peers need torchvision, which does not import
# beside the CPU torch pin, so the bench venv uses torch 2.14.1 + torchvision 0.29.1.
BENCH_VENV  := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed
BENCH_TORCH := torch==2.14.1 torchvision==0.29.1

$(BENCH_STAMP): pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q $(BENCH_TORCH)
	$(BENCH_VENV)/bin/python -m pip install -q -e '.[bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	OMP_NUM_THREADS=1 $(BENCH_VENV)/bin/python benchmarks/bench_nets.py --variants winograd --threads 1

# `make bench-quality`: ddpmkit vs denoising-diffusion-pytorch vs diffusers, 3 minutes of training
# each on the digits, back to back, 1797 samples each, FD with our feature net, and ddpmkit's test
# bits/dim (docs/benchmarks.md).
bench-quality: $(BENCH_STAMP)
	OMP_NUM_THREADS=1 $(BENCH_VENV)/bin/python benchmarks/time_to_quality.py --minutes 3 --threads 1

# `make bench-likelihood`: `ddpmkit train --loss elbo --steps 1500` + `ddpmkit eval --bpd exact` on
# the digits for 3 seeds, an independent float64 check, and the anchors (uniform, independent
# categoricals, an autoregressive logistic model) on the same split (docs/likelihood.md).
bench-likelihood: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) benchmarks/likelihood.py --seeds 0 1 2 --jobs 2

clean:
	rm -rf $(VENV) .pytest_cache runs
