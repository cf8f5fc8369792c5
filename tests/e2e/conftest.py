"""The daemon's process shape in end-to-end tests.

By default a daemon started here runs as one process (`[daemon] ingest_workers = delivery_workers = 0`, set through
the environment, so it applies to every config a test writes): the ingest and delivery code is the same in either
shape, and one process starts in a third of the CPU. Modules marked `supervised` run the product's default shape,
a supervisor with ingest and delivery processes: those whose behaviour the shape changes (signals, sd_notify,
health, metrics and status, reloads, logs, faults, damaged spools, start-up failures, the CLI, the processes).
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def process_shape(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("supervised") is None:
        monkeypatch.setenv("SHIPPER__DAEMON__INGEST_WORKERS", "0")
        monkeypatch.setenv("SHIPPER__DAEMON__DELIVERY_WORKERS", "0")
