# Bulkhead developer / CI entry points. Everything runs as root on a Debian bookworm host.
#   make install   host packages, containerd 1.7 + 2.1, venv + shim, demo image, guest image,
#                  the VM template for the default size
#   make demo      run one container through containerd with the Bulkhead runtime
#   make test      lint + the whole test suite
#   make lint      ruff + mypy
#   make lock      refresh requirements/lock.txt to the newest releases pyproject.toml allows, then
#                  make test on them (LOCK_ARGS="--upgrade-package tomlkit" to move one package)
#   make bench-pods  pods through CRI, Bulkhead vs runc (BENCH_ARGS="-n 5 ..."; needs `install`)
#   make bench-stdio stdio throughput, runc vs Bulkhead's C and Python engines
#                  (BENCH_ARGS="--size-mib 64 ..."; needs `install`)
#   make bench-files file I/O and exec inside containers, runc vs gVisor vs Bulkhead
#                  (BENCH_ARGS="-n 3 --rows exec,files ..."; needs `install`)
#   make clean     remove build artefacts from the work tree (not what `install` installed)

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := install

HOST_PYTHON ?= /usr/bin/python3
OPT_DIR     ?= /opt/bulkhead
VENV        ?= $(OPT_DIR)/venv
PY          := $(VENV)/bin/python
BIN_DIR     ?= /usr/local/bin
DEMO_TAR    ?= /usr/local/share/bulkhead/demo-image.tar
PAUSE_TAR   ?= /usr/local/share/bulkhead/pause-image.tar
PYTHON_TAR  ?= /usr/local/share/bulkhead/python-image.tar
GUEST_BUILD := packaging/build-guest-image
# Installed into $(BIN_DIR) from the venv.
ENTRY_POINTS := containerd-shim-bulkhead-v2 bulkhead
# Source trees linted and type-checked (only those that contain Python files are passed on).
LINT_DIRS   := shim guest-agent wire packaging/guestimage bench tests/cri tests/harness cffi_build
# Our own scripts without a .py suffix, linted explicitly.
LINT_FILES  := packaging/demo-image/build $(GUEST_BUILD)
# What a change to should reinstall the package into the venv.
SRC_INPUTS  := pyproject.toml setup.py shim guest-agent wire cffi_build proto README.md
INSTALL_STAMP := $(VENV)/.bulkhead-src-sha256
# The one lock of every Python distribution installed anywhere (venv, build, tests, guest image),
# with hashes; `make lock` writes it from pyproject.toml (dependencies, the `test` extra) and
# requirements/inputs.in (build requirements, the lock tool).
LOCK        := requirements/lock.txt
LOCK_INPUTS := pyproject.toml requirements/inputs.in
LOCK_STAMP  := $(VENV)/.bulkhead-lock-sha256
LOCK_ARGS   ?= --upgrade

.PHONY: install deps venv package links demo-image guest-image template demo test pytest lint clean \
        bench-pods bench-stdio bench-files lock

install: deps venv package links demo-image guest-image template

deps:
	bash packaging/host/install-deps

# A Debian-python venv (never pyenv's: the shim must run the same Python on every host) holding
# exactly the lock, every hash checked. Made anew whenever the lock or the interpreter changed, so
# nothing an earlier install put there survives.
venv: deps
	@want=$$(sha256sum $(LOCK) | cut -d' ' -f1); \
	home=$$(sed -n 's/^home = //p' $(VENV)/pyvenv.cfg 2>/dev/null || true); \
	if [[ -x $(PY) && "$$home" == "$(patsubst %/,%,$(dir $(HOST_PYTHON)))" \
	      && "$$(cat $(LOCK_STAMP) 2>/dev/null)" == "$$want" ]]; then \
	  echo "venv $(VENV): as $(LOCK) says"; \
	else \
	  echo "creating venv $(VENV) from $(HOST_PYTHON) and $(LOCK)"; \
	  rm -rf $(VENV); \
	  $(HOST_PYTHON) -m venv $(VENV); \
	  $(PY) -m pip install -q --require-hashes -r $(LOCK); \
	  echo "$$want" > $(LOCK_STAMP); \
	fi

# (Re)install the project (non-editable) only when its sources changed: its dependencies and build
# requirements are the venv's locked ones (no index, no build isolation), and pip check proves the
# lock satisfies pyproject.toml.
package: venv
	@inputs=(); for p in $(SRC_INPUTS); do if [[ -e $$p ]]; then inputs+=("$$p"); fi; done; \
	sum=$$(find "$${inputs[@]}" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' \
	        ! -path '*.egg-info/*' ! -name '*.so' -print0 | sort -z | xargs -0 -r sha256sum | sha256sum); \
	if [[ -f $(INSTALL_STAMP) && "$$(cat $(INSTALL_STAMP))" == "$$sum" ]]; then \
	  echo "bulkhead package: up to date in $(VENV)"; \
	else \
	  rm -rf build shim/*.egg-info guest-agent/*.egg-info; \
	  $(PY) -m pip uninstall -q -y bulkhead >/dev/null 2>&1 || true; \
	  $(PY) -m pip install -q --no-build-isolation --no-deps --no-index --no-cache-dir .; \
	  rm -rf build shim/*.egg-info guest-agent/*.egg-info; \
	  $(PY) -m pip check; \
	  echo "$$sum" > $(INSTALL_STAMP); \
	  echo "bulkhead package: installed into $(VENV)"; \
	fi

links: package
	@for e in $(ENTRY_POINTS); do \
	  if [[ -e $(VENV)/bin/$$e ]]; then ln -sfn $(VENV)/bin/$$e $(BIN_DIR)/$$e; fi; \
	done

demo-image: deps
	$(HOST_PYTHON) packaging/demo-image/build --out $(DEMO_TAR)
	$(HOST_PYTHON) packaging/demo-image/build --image pause --out $(PAUSE_TAR)
	$(HOST_PYTHON) packaging/demo-image/build --image python --out $(PYTHON_TAR)

# Built by packaging/build-guest-image when that script exists (another part of the tree).
guest-image: package
	@if [[ -d $(GUEST_BUILD) ]]; then \
	  $(PY) $(GUEST_BUILD); \
	elif [[ -f $(GUEST_BUILD) ]]; then \
	  if head -n1 $(GUEST_BUILD) | grep -q python; then $(PY) $(GUEST_BUILD); \
	  else PATH=$(VENV)/bin:$$PATH bash $(GUEST_BUILD); fi; \
	else \
	  echo "$(GUEST_BUILD) not present yet: no guest image built"; \
	fi

# The VM template for the default size (on tmpfs: rebuilt after a reboot, or on first need).
template: guest-image links
	$(BIN_DIR)/bulkhead template build

# `bulkhead demo` from the venv (install links it into $(BIN_DIR) too): a private containerd of
# the `containerd` on PATH, else of a development install (DEMO_ARGS="--containerd PATH ...").
demo: install
	$(VENV)/bin/bulkhead demo $(DEMO_ARGS)

# Lint first, tests last (so pytest's summary closes the output); fail if either failed.
test: install
	@rc=0; $(MAKE) --no-print-directory lint || rc=1; \
	$(PY) -m pytest -q --durations=15 tests || rc=$$?; \
	exit $$rc

pytest: install
	$(PY) -m pytest -q tests

# Upgrading is a deliberate, tested step: resolve anew for the venv's interpreter, write the lock
# with every file's hash, then the whole suite on a venv made from it.
lock: venv
	$(VENV)/bin/uv pip compile $(LOCK_INPUTS) --extra test --generate-hashes --python $(PY) \
	  --custom-compile-command "make lock" --quiet $(LOCK_ARGS) -o $(LOCK)
	$(MAKE) --no-print-directory test

lint: package
	@dirs=(); for d in $(LINT_DIRS); do \
	  if [[ -n $$(find $$d -name '*.py' -print -quit 2>/dev/null) ]]; then dirs+=("$$d"); fi; \
	done; \
	rc=0; \
	echo "ruff check $${dirs[*]} $(LINT_FILES)"; \
	$(VENV)/bin/ruff check "$${dirs[@]}" $(LINT_FILES) || rc=1; \
	echo "mypy $${dirs[*]}"; \
	$(VENV)/bin/mypy "$${dirs[@]}" || rc=1; \
	exit $$rc

# Start time, parallel start, memory per idle pod and HTTP throughput of pods, Bulkhead vs runc
# (bench/pods.py; figures only). Runs against what is installed: it installs nothing itself.
bench-pods:
	$(PY) bench/pods.py $(BENCH_ARGS)

# stdout and stdin throughput of `ctr run` containers and the CPU they cost the shim, runc vs
# Bulkhead with io_engine c and python (bench/stdio_throughput.py; figures only). Installs nothing.
bench-stdio:
	$(PY) bench/stdio_throughput.py $(BENCH_ARGS)

# Exec, small files, dd, syscalls, CPU, Python imports and tar timed inside `ctr run` containers,
# runc vs gVisor (runsc, from install-deps) vs Bulkhead (bench/file_io.py; figures only; the
# Python row uses $(PYTHON_TAR) from demo-image). Installs nothing.
bench-files:
	$(PY) bench/file_io.py $(BENCH_ARGS)

clean:
	rm -rf build dist .mypy_cache .ruff_cache .pytest_cache .hypothesis out
	find . -path ./.git -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -type d -print0 \
	  | xargs -0 -r rm -rf
	find . -path ./.git -prune -o \( -name '*.pyc' -o -name '*.cpython-*.so' -o -name '*.abi3.so' \) \
	  -type f -print0 \
	  | xargs -0 -r rm -f
