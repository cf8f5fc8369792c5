# Everything a user types: `make run`, `make test`, `make bench`. Each builds .venv from nothing when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench lint soak clean
# promtool runs the alert rules' unit tests (deploy/prometheus): Debian's prometheus package, pinned, of which only
# this one binary is unpacked into .venv, so no Prometheus server is installed or started by a test run. Should Debian
# replace this version, pin the one `apt-get update; apt-cache policy prometheus` shows.
PROMETHEUS_DEB := 2.42.0+ds-5+deb12u1
PROMTOOL := $(BIN)/promtool

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/shipper run $(if $(CONFIG),--config $(CONFIG))

test: $(STAMP) $(PROMTOOL)
	$(BIN)/python -m pytest

# `apt-get download` needs the package lists; a fresh machine has none until `apt-get update` (as root, as CI runs).
$(PROMTOOL): | $(STAMP)
	rm -rf $(VENV)/prometheus-deb && mkdir $(VENV)/prometheus-deb
	cd $(VENV)/prometheus-deb && { apt-get download -qq prometheus=$(PROMETHEUS_DEB) 2>/dev/null \
		|| { apt-get update -qq && apt-get download -qq prometheus=$(PROMETHEUS_DEB); }; }
	dpkg-deb -x $(VENV)/prometheus-deb/prometheus_*.deb $(VENV)/prometheus-deb/root
	install -m 0755 $(VENV)/prometheus-deb/root/usr/bin/promtool $@
	rm -rf $(VENV)/prometheus-deb

lint: $(STAMP)
	$(BIN)/ruff check shipper tests bench
	$(BIN)/ruff format --check shipper tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench
	$(BIN)/python -m bench.enrich

# SOAK_SECONDS shortens it (default 600).
soak: $(STAMP)
	$(BIN)/python -m bench.soak

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
