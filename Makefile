# Two commands for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_DIR ?= .run
DISTRIBUTION_PORT ?= 8080
EDGE_PORT ?= 8082
EDGE2_PORT ?= 8083

.PHONY: install system-deps run demo test bench lint clean

# System packages the tests start for real (apt on Debian/Ubuntu; only what is missing).
SYSTEM_PACKAGES ?= gpg:gnupg curl:curl strace:strace nginx:nginx
define apt_install
	@missing=""; \
	for pair in $(1); do command -v $${pair%%:*} >/dev/null 2>&1 || [ -x /usr/sbin/$${pair%%:*} ] \
	  || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
endef

system-deps:
	$(call apt_install,$(SYSTEM_PACKAGES))

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The Distribution service and two edges on 127.0.0.1, trusted and wired, with a signed demo
# bundle (devstack/run.py); state in $(RUN_DIR)/ is kept between runs. Ctrl-C stops everything.
run: install system-deps
	@$(BIN)/python -m devstack.run --run-dir $(RUN_DIR) --distribution-port $(DISTRIBUTION_PORT) \
	  --edge-port $(EDGE_PORT) --edge-port $(EDGE2_PORT)

# The whole story end to end (devstack/demo.py): a fresh temporary directory, free ports, exit 0 when every step worked.
demo: install system-deps
	@$(BIN)/python -m devstack.demo

test: install system-deps
	$(BIN)/python -m pytest -q

bench: install system-deps
	$(call apt_install,nginx:nginx wrk:wrk)
	$(BIN)/python bench/download.py

lint: install
	$(BIN)/pip install -q -e '.[test,dev]'
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --ignore-missing-imports wire storage_backends repository edge distribution devstack

clean:
	rm -rf $(VENV) $(RUN_DIR) .pytest_cache
