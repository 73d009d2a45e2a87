# Two commands for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
RUN_DIR ?= .run
DISTRIBUTION_PORT ?= 8080
EDGE_PORT ?= 8082
EDGE2_PORT ?= 8083

.PHONY: install system-deps test-system-deps run demo test bench lint clean

# System packages (apt on Debian/Ubuntu; only what is missing): what the services need to run,
# and what the tests start for real besides. A package counts as present when its program is on
# PATH, in /usr/sbin, or in a versioned PostgreSQL bindir (Debian keeps initdb out of PATH).
SYSTEM_PACKAGES ?= gpg:gnupg curl:curl
TEST_SYSTEM_PACKAGES ?= strace:strace ss:iproute2 nginx:nginx initdb:postgresql chromium:chromium
define apt_install
	@missing=""; \
	for pair in $(1); do command -v $${pair%%:*} >/dev/null 2>&1 || [ -x /usr/sbin/$${pair%%:*} ] \
	  || ls /usr/lib/postgresql/*/bin/$${pair%%:*} >/dev/null 2>&1 \
	  || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
endef

system-deps:
	$(call apt_install,$(SYSTEM_PACKAGES))

test-system-deps: system-deps
	$(call apt_install,$(TEST_SYSTEM_PACKAGES))

$(BIN)/pip:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The runtime dependencies only, with pip's progress shown: a first `make run` takes a while.
$(RUN_STAMP): setup.cfg pyproject.toml | $(BIN)/pip
	@echo "Installing the runtime dependencies into $(VENV) (once; later runs skip this)"
	$(BIN)/pip install --progress-bar on -e .
	touch $@

$(TEST_STAMP): setup.cfg pyproject.toml | $(BIN)/pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(RUN_STAMP)

install: $(RUN_STAMP)

# The Distribution service and two edges on 127.0.0.1, trusted and wired, with a signed demo
# bundle, and two enrolled node-agent devices with the fleet's demo app (devstack/run.py);
# state in $(RUN_DIR)/ is kept between runs. Ctrl-C stops everything.
run: install system-deps
	@$(BIN)/python -m devstack.run --run-dir $(RUN_DIR) --distribution-port $(DISTRIBUTION_PORT) \
	  --edge-port $(EDGE_PORT) --edge-port $(EDGE2_PORT)

# The whole story end to end (devstack/demo.py): a fresh temporary directory, free ports, exit 0 when every step worked.
demo: install system-deps
	@$(BIN)/python -m devstack.demo

# Three workers on two cores: most tests wait on processes they started, not on a core. A file's
# tests stay together in one worker (--dist loadfile), sharing its fixtures; the files are handed
# out longest first (tests/scheduling.py), so no long file is left to run alone at the end. The schemathesis
# tests run in a process of their own (under pytest-xdist their cases are never run), beside the
# others rather than after them: alone they would keep one core busy and leave the other idle.
# Their output follows the others'; the run fails if either fails.
PYTEST_WORKERS ?= 3
SERIAL_TESTS := tests/test_schemathesis.py
SERIAL_LOG := $(VENV)/serial-tests.log
test: $(TEST_STAMP) test-system-deps
	@$(BIN)/python -m pytest -q $(SERIAL_TESTS) > $(SERIAL_LOG) 2>&1 & serial=$$!; \
	echo "$(SERIAL_TESTS): running beside the others, its output follows theirs"; \
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder $(addprefix --ignore=,$(SERIAL_TESTS)); parallel=$$?; \
	wait $$serial; alone=$$?; echo "--- $(SERIAL_TESTS)"; cat $(SERIAL_LOG); \
	test $$parallel = 0 && test $$alone = 0

bench: $(TEST_STAMP) test-system-deps
	$(call apt_install,nginx:nginx wrk:wrk)
	$(BIN)/python bench/download.py

lint: $(TEST_STAMP)
	$(BIN)/pip install -q -e '.[test,dev]'
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --ignore-missing-imports wire storage_backends repository edge distribution devstack agent console

clean:
	rm -rf $(VENV) $(RUN_DIR) .pytest_cache
