# Two commands for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_DIR ?= .run
EDGE_PORT ?= 8082

.PHONY: install system-deps run test bench lint clean

# System packages the tests start for real (apt on Debian/Ubuntu; only what is missing).
SYSTEM_PACKAGES ?= gpg:gnupg curl:curl strace:strace
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

run: install
	@mkdir -p $(RUN_DIR)
	@[ -f $(RUN_DIR)/admin-token ] || $(BIN)/python -c "import secrets; print(secrets.token_urlsafe(24))" > $(RUN_DIR)/admin-token
	@token=$$(cat $(RUN_DIR)/admin-token); url=http://127.0.0.1:$(EDGE_PORT)/artifactory; \
	echo ""; \
	echo "  Edge node:    $$url/api/repositories"; \
	echo "  Admin token:  $$token   (kept in $(RUN_DIR)/admin-token)"; \
	echo "  Another port: make run EDGE_PORT=18082"; \
	echo ""; \
	echo "  Try:"; \
	echo "    curl -H 'Authorization: Bearer $$token' -T $(CURDIR)/README.md $$url/artifactory-edge-uploads/docs/README.md"; \
	echo "    curl $$url/api/storage/artifactory-edge-uploads/docs/README.md"; \
	echo "    curl -O -C - $$url/artifactory-edge-uploads/docs/README.md"; \
	echo "    $(BIN)/edge token create --role deployer --url http://127.0.0.1:$(EDGE_PORT) --token $$token"; \
	echo ""; \
	echo "  Ctrl-C stops it (running downloads finish first; Ctrl-C again quits at once)."; \
	echo ""; \
	EDGE_ADMIN_TOKEN=$$token exec $(BIN)/edge serve --data-dir $(RUN_DIR)/edge --host 127.0.0.1 --port $(EDGE_PORT)

test: install system-deps
	$(BIN)/python -m pytest -q

bench: install system-deps
	$(call apt_install,nginx:nginx wrk:wrk)
	$(BIN)/python bench/download.py

lint: install
	$(BIN)/pip install -q -e '.[test,dev]'
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --ignore-missing-imports storage_backends repository edge distribution

clean:
	rm -rf $(VENV) $(RUN_DIR) .pytest_cache
