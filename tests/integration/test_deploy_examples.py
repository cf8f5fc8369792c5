"""The sidecar examples in deploy/ hang together: the configuration they give shipper is valid, the app and shipper
share the socket's directory and group, the spool is persistent, and stop timeouts exceed the drain.

No cluster or Docker daemon is needed: the files are parsed and checked against shipper's own config loader.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from shipper.config import load_config
from shipper.config.process import DaemonConfig
from shipper.config.sinks import FileSinkConfig, JetStreamSinkConfig, VendorSinkConfig
from tests.jetstream import nats_server
from tests.support import REPO

yaml = pytest.importorskip("yaml")

DEPLOY = REPO / "deploy"


def dockerfile_env() -> dict[str, str]:
    text = (DEPLOY / "Dockerfile").read_text()
    return dict(re.findall(r"\b(SHIPPER__\w+)=(\S+)", text))


def dockerfile_user() -> str:
    [user] = re.findall(r"^USER (\S+)$", (DEPLOY / "Dockerfile").read_text(), re.MULTILINE)
    return str(user)


def dockerfile_workdir() -> str:
    [workdir] = re.findall(r"^WORKDIR (\S+)$", (DEPLOY / "Dockerfile").read_text(), re.MULTILINE)
    return str(workdir)


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)s", value)
    assert match, value
    return float(match.group(1))


# -- Kubernetes --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def k8s() -> dict[str, Any]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all((DEPLOY / "sidecar.yaml").read_text())}


def mounts(container: dict[str, Any]) -> dict[str, str]:
    return {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}


def test_k8s_shipper_is_a_native_sidecar_sharing_the_socket_directory_and_group(k8s: dict[str, Any]) -> None:
    pod = k8s["StatefulSet"]["spec"]["template"]["spec"]
    [shipper] = pod["initContainers"]
    [app] = pod["containers"]
    assert shipper["restartPolicy"] == "Always"
    env = {e["name"]: e["value"] for e in shipper["env"]}
    socket_dir = str(Path(env["SHIPPER__INGEST__UNIX"]).parent)
    assert mounts(shipper)["socket"] == mounts(app)["socket"] == socket_dir
    security = pod["securityContext"]
    assert f"{security['runAsUser']}:{security['runAsGroup']}" == dockerfile_user()
    assert security["fsGroup"] == security["runAsGroup"]  # the app gets the socket's group


def test_k8s_spool_is_a_persistent_claim_per_pod(k8s: dict[str, Any]) -> None:
    statefulset = k8s["StatefulSet"]
    [claim] = statefulset["spec"]["volumeClaimTemplates"]
    [shipper] = statefulset["spec"]["template"]["spec"]["initContainers"]
    env = {e["name"]: e["value"] for e in shipper["env"]}
    assert mounts(shipper)[claim["metadata"]["name"]] == str(Path(env["SHIPPER__SPOOL__PATH"]).parent)


def test_k8s_config_is_valid_and_its_key_file_is_mounted(k8s: dict[str, Any], tmp_path: Path) -> None:
    pod = k8s["StatefulSet"]["spec"]["template"]["spec"]
    [shipper] = pod["initContainers"]
    config_file = tmp_path / "shipper.toml"
    config_file.write_text(k8s["ConfigMap"]["data"]["shipper.toml"])
    env = {e["name"]: e["value"] for e in shipper["env"]}
    config = load_config(config_file, environ=env)
    sink = config.sinks["freeplay"]
    assert isinstance(sink, VendorSinkConfig) and sink.api_key_file is not None
    key_file = sink.api_key_file
    assert str(key_file.parent) == mounts(shipper)["keys"]
    assert key_file.name in k8s["Secret"]["stringData"]
    assert pod["terminationGracePeriodSeconds"] > 2 * config.daemon.drain_timeout


def test_k8s_sidecar_is_ready_on_readyz(k8s: dict[str, Any]) -> None:
    [shipper] = k8s["StatefulSet"]["spec"]["template"]["spec"]["initContainers"]
    assert "http://127.0.0.1:8790/readyz" in " ".join(shipper["readinessProbe"]["exec"]["command"])
    assert shipper["readinessProbe"]["timeoutSeconds"] < shipper["readinessProbe"]["periodSeconds"]


def quantity(value: str) -> int:
    match = re.fullmatch(r"(\d+)(Mi|Gi)", value)
    assert match, value
    return int(match.group(1)) * {"Mi": 2**20, "Gi": 2**30}[match.group(2)]


def test_k8s_spool_bound_fits_its_volume_with_room_for_the_filesystem(k8s: dict[str, Any], tmp_path: Path) -> None:
    statefulset = k8s["StatefulSet"]
    [claim] = statefulset["spec"]["volumeClaimTemplates"]
    volume = quantity(claim["spec"]["resources"]["requests"]["storage"])
    config_file = tmp_path / "shipper.toml"
    config_file.write_text(k8s["ConfigMap"]["data"]["shipper.toml"])
    spool = load_config(config_file).spool
    # ext4 keeps ~5% reserved (unusable by uid 10001) plus its journal: stay under 80% of the claim.
    assert spool.max_bytes is not None and spool.max_bytes <= 0.8 * volume
    assert spool.when_full == "reject"


def test_k8s_memory_request_covers_the_measured_peak_with_vendor_sinks(k8s: dict[str, Any]) -> None:
    [shipper] = k8s["StatefulSet"]["spec"]["template"]["spec"]["initContainers"]
    resources = shipper["resources"]
    measured = orjson.loads((REPO / "bench" / "results" / "e-vendors.json").read_bytes())
    peak = measured["scenarios"]["e.vendors"]["peak_rss_mb"] * 2**20  # VmHWM kB / 1024: MiB
    request, limit = quantity(resources["requests"]["memory"]), quantity(resources["limits"]["memory"])
    assert peak <= request < limit
    assert limit - peak >= 40 * 2**20  # the second tiktoken encoding still fits


# -- docker compose ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    return services


def test_compose_app_shares_shippers_network_socket_volume_and_group(compose: dict[str, Any]) -> None:
    shipper, app = compose["shipper"], compose["app"]
    assert app["network_mode"] == "service:shipper"  # 127.0.0.1:8790 is shipper, as in a pod
    socket_dir = str(Path(dockerfile_env()["SHIPPER__INGEST__UNIX"]).parent)
    assert f"socket:{socket_dir}" in shipper["volumes"]
    assert f"socket:{socket_dir}" in app["volumes"]
    assert shipper["user"] == dockerfile_user()
    assert app["group_add"] == [dockerfile_user().split(":")[1]]
    assert app["depends_on"]["shipper"]["condition"] == "service_healthy"


def test_compose_environment_alone_is_a_valid_config(compose: dict[str, Any]) -> None:
    env = {**dockerfile_env(), **{k: str(v) for k, v in compose["shipper"]["environment"].items()}}
    config = load_config(None, environ=env)
    # The variables add the freeplay sink beside the built-in `local` one, whose relative file lands in the image's
    # working directory: the spool volume, writable under read_only.
    assert list(config.sinks) == ["local", "freeplay"]
    local = config.sinks["local"]
    assert isinstance(local, FileSinkConfig) and not local.path.is_absolute()
    assert f"spool:{dockerfile_workdir()}" in compose["shipper"]["volumes"]
    assert f"spool:{config.spool.path.parent}" in compose["shipper"]["volumes"]
    assert seconds(compose["shipper"]["stop_grace_period"]) > 2 * DaemonConfig().drain_timeout


# -- the fleet: 3 NATS nodes, relays, a sidecar (deploy/fleet/) ----------------------------------------------------

FLEET = DEPLOY / "fleet"


@pytest.fixture(scope="module")
def fleet() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load((FLEET / "compose.yaml").read_text())["services"]
    return services


def test_fleet_nats_config_is_valid_for_every_node_and_syncs_before_it_acknowledges(fleet: dict[str, Any]) -> None:
    """The nodes share one file; each is told its name. The pinned nats-server checks the file as each node reads it."""
    nodes = [name for name in fleet if name.startswith("nats-")]
    assert len(nodes) == 3
    text = (FLEET / "nats.conf").read_text()
    assert re.search(r"^\s*sync_interval: always$", text, re.MULTILINE)
    assert sorted(re.findall(r"nats-route://(nats-\d):6222", text)) == sorted(nodes)
    for node in nodes:
        env = {"NATS_SERVER_NAME": fleet[node]["environment"]["NATS_SERVER_NAME"], "PATH": os.environ["PATH"]}
        assert env["NATS_SERVER_NAME"] == node
        checked = subprocess.run([str(nats_server()), "-t", "-c", str(FLEET / "nats.conf")], env=env,
                                 capture_output=True, text=True, timeout=30)  # fmt: skip
        assert checked.returncode == 0, checked.stderr
        assert f"{node}:/data" in fleet[node]["volumes"]  # each node its own store


def test_fleet_sidecar_and_relays_agree_on_the_stream_and_the_relays_deliver_its_target(
    fleet: dict[str, Any],
) -> None:
    sidecar = load_config(FLEET / "sidecar.toml")
    # The admin listener is off loopback, so it needs the token compose passes in the environment.
    relay = load_config(FLEET / "relay.toml", environ={"SHIPPER__ADMIN__TOKEN": "t" * 32})
    sink, vendor = sidecar.sinks["fleet"], sidecar.sinks["humanloop"]
    assert isinstance(sink, JetStreamSinkConfig) and relay.relay is not None
    assert isinstance(vendor, VendorSinkConfig) and vendor.via == "fleet"  # the SDK's calls go into the stream
    assert vendor.api_key_env is None and vendor.api_key_file is None  # the relay holds the key
    nodes = {f"nats://{name}:4222" for name in fleet if name.startswith("nats-")}
    assert set(sink.servers) == set(relay.relay.servers) == nodes
    assert (sink.stream, sink.partitions, sink.subject_prefix) == (
        relay.relay.stream,
        relay.relay.partitions,
        relay.relay.subject_prefix,
    )
    assert sink.target in relay.sinks  # the relay has the sink the sidecar's records are for
    assert relay.sinks[sink.target].type == vendor.type
    relays = [name for name in fleet if name.startswith("relay-")]
    assert len(relays) >= 2
    for name in relays:
        service = fleet[name]
        assert service["command"] == ["run", "--role", "relay", "--config", "/etc/shipper/relay.toml"]
        assert f"{name}:/var/lib/shipper" in service["volumes"]  # its own dead letters, kept
        assert seconds(service["stop_grace_period"]) > relay.daemon.drain_timeout
        assert "SHIPPER__ADMIN__TOKEN" in service["environment"]  # the admin listener is off loopback
    assert seconds(fleet["sidecar"]["stop_grace_period"]) > sidecar.daemon.drain_timeout
