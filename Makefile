# Two commands on a fresh machine: `make train` and `make test`. Each creates
# .venv and installs the package (with its test extras) on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

# JAX's persistent compilation cache: later runs skip the XLA compiles.
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.jax_cache
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS ?= 1
export MUJOCO_GL ?= egl
# Python's bytecode cache, kept inside .venv (the install skips byte-compiling,
# below): each interpreter that the tests start (two workers, the CLI hosts,
# the subprocess checks) then imports jax, MuJoCo and flax in about 4 s
# instead of 9 on this CPU. An environment that sets PYTHONDONTWRITEBYTECODE
# would have every interpreter compile them again; empty means unset.
export PYTHONPYCACHEPREFIX := $(CURDIR)/$(VENV)/pycache
export PYTHONDONTWRITEBYTECODE :=
export PYTHONUNBUFFERED := 1

.PHONY: train calibrate test test-warp test-gym bench render lint clean

# --no-compile: Python compiles each module it imports on first use instead of
# every installed file up front (the install takes a third of the time).
$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile -e '.[test]'
	touch $(STAMP)

train: $(STAMP)
	$(PY) -m experiments.train

calibrate: $(STAMP)
	$(PY) -m experiments.calibrate

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup --no-loadscope-reorder --durations=10

# The camera's Warp backend against the ray caster (tests/test_camera.py),
# with warp-lang installed into .venv (about 400 MB); `make test` then runs
# these tests too.
WARP_STAMP := $(VENV)/.warp-stamp

$(WARP_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --no-compile -e '.[test,warp]'
	touch $(WARP_STAMP)

test-warp: $(WARP_STAMP)
	$(PY) -m pytest -q tests/test_camera.py -k warp

# The gymnasium adapter's tests with Stable-Baselines3's SAC training on it
# (the gym-test extra; it pulls in PyTorch, about 700 MB for its CPU build: a
# CPU-only machine can install that build first, following PyTorch's
# instructions, instead of the default one with CUDA) and the USB vector env
# against single envs (about 40 s of compiling). `make test` runs the rest of
# tests/test_gym.py.
GYM_STAMP := $(VENV)/.gym-stamp

$(GYM_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --no-compile -e '.[test,gym-test]'
	touch $(GYM_STAMP)

test-gym: $(GYM_STAMP)
	INSERTION_JAX_SLOW_GYM_TESTS=1 $(PY) -m pytest -q tests/test_gym.py --durations=10

BENCH_STAMP := $(VENV)/.bench-stamp

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --no-compile -e '.[test,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	for task in usb dsub model_e; do \
		$(PY) -m experiments.benchmarks.env_throughput --task=$$task --json || exit 1; \
	done
	$(PY) -m experiments.benchmarks.update_throughput --json
	$(PY) -m experiments.benchmarks.train_throughput --json
	$(PY) -m experiments.benchmarks.replay_throughput --json
	$(PY) -m experiments.benchmarks.camera_throughput --task=usb --json

render: $(STAMP)
	$(PY) -m experiments.render --task=all --out=docs/images

clean:
	rm -rf $(VENV) .jax_cache .pytest_cache

lint: $(STAMP)
	$(PY) -m ruff check insertion_jax experiments hardware tests
	$(PY) -m ruff format --check insertion_jax experiments hardware tests
