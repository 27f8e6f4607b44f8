"""The Kubernetes manifests hang together: settings are real Settings fields with valid
values, the Bytewax cluster wiring matches the StatefulSet, and the recovery init works."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from bytewax import run as bytewax_run

from api.app import create_app
from api.auth import ApiKey
from flows import dataflow
from flows.settings import Settings

K8S = Path(__file__).resolve().parent.parent / "infra" / "k8s"


def documents() -> dict[tuple[str, str], dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = [
        doc
        for name in kustomization["resources"]
        for doc in yaml.safe_load_all((K8S / name).read_text())
    ]
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}


DOCS = documents()
STATEFULSET = DOCS["StatefulSet", "meterflow"]
POD = STATEFULSET["spec"]["template"]["spec"]
[WORKER] = POD["containers"]
[INIT] = POD["initContainers"]
SETTINGS = DOCS["ConfigMap", "meterflow-settings"]["data"]
POD_LABELS = STATEFULSET["spec"]["template"]["metadata"]["labels"]
API_DEPLOYMENT = DOCS["Deployment", "meterflow-api"]
API_POD = API_DEPLOYMENT["spec"]["template"]["spec"]
[API] = API_POD["containers"]


def env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every variable the container sees, with its source."""
    found: dict[str, dict[str, Any]] = {}
    for source in container.get("envFrom", []):
        data = DOCS["ConfigMap", source["configMapRef"]["name"]]["data"]
        found |= {name: {"value": value} for name, value in data.items()}
    return found | {e["name"]: e for e in container.get("env", [])}


def test_every_file_is_listed_and_every_resource_named() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(DOCS) == {
        ("ConfigMap", "meterflow-settings"),
        ("ConfigMap", "meterflow-cluster"),
        ("Service", "meterflow"),
        ("StatefulSet", "meterflow"),
        ("Deployment", "meterflow-api"),
        ("Service", "meterflow-api"),
    }


@pytest.mark.parametrize("container", [WORKER, INIT, API], ids=["worker", "init", "api"])
def test_every_meterflow_variable_is_a_settings_field(container: dict[str, Any]) -> None:
    names = [n for n in env(container) if n.startswith("METERFLOW_")]
    assert names
    unknown = [
        n for n in names if n.removeprefix("METERFLOW_").lower() not in Settings.model_fields
    ]
    assert not unknown


def test_the_settings_parse(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("METERFLOW_CONFIG_FILE", str(tmp_path / "absent.toml"))
    for name, value in SETTINGS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("METERFLOW_CLICKHOUSE_DSN", "http://meterflow:secret@clickhouse:8123")
    settings = Settings()
    assert settings.recovery_dir == Path(SETTINGS["METERFLOW_RECOVERY_DIR"])
    assert settings.clickhouse_dsn.startswith("http://"), "chDB cannot be shared by pods"
    assert settings.kafka_bootstrap == SETTINGS["METERFLOW_KAFKA_BOOTSTRAP"]


@pytest.mark.parametrize("container", [WORKER, API], ids=["worker", "api"])
def test_the_dsn_comes_from_a_secret(container: dict[str, Any]) -> None:
    dsn = env(container)["METERFLOW_CLICKHOUSE_DSN"]
    assert dsn["valueFrom"]["secretKeyRef"] == {"name": "meterflow-clickhouse", "key": "dsn"}


def test_the_api_serves_its_port_behind_its_service_with_keys_from_a_secret() -> None:
    variables = {k: v["value"] for k, v in env(API).items() if "value" in v}
    assert API["command"] == ["meterflow", "serve"]
    [port] = API["ports"]
    assert port["containerPort"] == int(variables["METERFLOW_API_PORT"])
    assert variables["METERFLOW_API_HOST"] == "0.0.0.0"
    service = DOCS["Service", "meterflow-api"]["spec"]
    assert (
        service["selector"].items()
        <= API_DEPLOYMENT["spec"]["template"]["metadata"]["labels"].items()
    )
    assert [p["targetPort"] for p in service["ports"]] == [port["name"]]
    keys = Path(variables["METERFLOW_API_KEYS_FILE"])
    [mount] = [m for m in API["volumeMounts"] if Path(m["mountPath"]) == keys.parent]
    [volume] = [v for v in API_POD["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "meterflow-api-keys"
    app = create_app(Settings(), [ApiKey("k" * 32, "operator")])
    paths = {getattr(route, "path", "") for route in app.routes}
    assert API["readinessProbe"]["httpGet"]["path"] in paths


def expand(value: str, variables: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command and args."""
    return re.sub(r"\$\((\w+)\)", lambda m: variables[m.group(1)], value)


def test_bytewax_reads_process_id_addresses_and_recovery_from_the_pod(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    name, replicas = STATEFULSET["metadata"]["name"], STATEFULSET["spec"]["replicas"]
    service = DOCS["Service", STATEFULSET["spec"]["serviceName"]]
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"]
    assert service["spec"]["selector"].items() <= POD_LABELS.items()
    variables = env(WORKER)
    assert variables["BYTEWAX_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    hostfile = Path(variables["BYTEWAX_HOSTFILE_PATH"]["value"])
    [mount] = [m for m in WORKER["volumeMounts"] if Path(m["mountPath"]) == hostfile.parent]
    [volume] = [v for v in POD["volumes"] if v["name"] == mount["name"]]
    hosts = DOCS["ConfigMap", volume["configMap"]["name"]]["data"][hostfile.name]
    port = WORKER["ports"][0]["containerPort"]
    assert hosts.split() == [
        f"{name}-{i}.{service['metadata']['name']}:{port}" for i in range(replicas)
    ]
    assert env(INIT)["REPLICAS"]["value"] == str(replicas)

    command = WORKER["command"]
    assert command[:3] == ["python", "-m", "bytewax.run"]
    values = {k: v["value"] for k, v in variables.items() if "value" in v}
    local_hostfile = tmp_path / hostfile.name
    local_hostfile.write_text(hosts)
    monkeypatch.setenv("BYTEWAX_STATEFULSET_NAME", values["BYTEWAX_STATEFULSET_NAME"])
    monkeypatch.setenv("BYTEWAX_HOSTFILE_PATH", str(local_hostfile))
    for i in range(replicas):
        monkeypatch.setenv("BYTEWAX_POD_NAME", f"{name}-{i}")
        monkeypatch.setattr(sys, "argv", [expand(arg, values) for arg in command[2:]])
        args = bytewax_run._parse_args()
        assert args.process_id == i
        assert args.addresses == ";".join(hosts.split())
        assert args.recovery_directory == Path(SETTINGS["METERFLOW_RECOVERY_DIR"])
        assert args.snapshot_interval == timedelta(
            seconds=float(SETTINGS["METERFLOW_SNAPSHOT_SECONDS"])
        )
    module, _, factory = args.import_str.partition(":")
    assert module == dataflow.__name__ and factory == "flow()"


def test_recovery_lives_on_the_pods_volume() -> None:
    [claim] = STATEFULSET["spec"]["volumeClaimTemplates"]
    recovery = Path(SETTINGS["METERFLOW_RECOVERY_DIR"])
    for container in (WORKER, INIT):
        [mount] = [m for m in container["volumeMounts"] if m["name"] == claim["metadata"]["name"]]
        assert recovery.is_relative_to(mount["mountPath"])


def run_init(tmp_path: Path, pod: str) -> list[str]:
    variables = {k: v["value"] for k, v in env(INIT).items() if "value" in v}
    recovery = tmp_path / pod / "recovery"
    script = INIT["args"][0]
    environment = {
        **os.environ,
        **variables,
        "BYTEWAX_POD_NAME": pod,
        "METERFLOW_RECOVERY_DIR": str(recovery),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    for _ in range(2):  # a restart must leave an initialised directory alone
        subprocess.run(["sh", "-c", script], env=environment, check=True)
    return sorted(p.name for p in recovery.iterdir())


def test_init_gives_each_pod_its_own_share_of_the_partitions(tmp_path: Path) -> None:
    shares = [run_init(tmp_path, f"meterflow-{i}") for i in range(STATEFULSET["spec"]["replicas"])]
    assert shares == [
        ["part-0.sqlite3", "part-2.sqlite3"],
        ["part-1.sqlite3", "part-3.sqlite3"],
    ]
