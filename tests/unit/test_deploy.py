"""The deployment artifacts stay true to the code: both Kustomize overlays render and validate
against Kubernetes schemas, every container is locked down and probed, every variable set is a
setting of its service, prod takes its secrets from Secrets, and the Dockerfile, the Grafana
dashboard and docs/operations.md agree with what the services really do."""

from __future__ import annotations

import ast
import base64
import copy
import fnmatch
import functools
import importlib.util
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import kubernetes_validate
import pytest
import yaml
from pydantic import SecretStr

from managed_os import events
from managed_os.bus.inprocess import InProcessBus
from managed_os.clock import SystemClock
from managed_os.db import make_engine
from managed_os.http import HttpMetrics
from managed_os.service import ConsumerSpec, Metrics, ServiceContext
from managed_os.suite import SPECS, load_spec

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
NAMESPACES = {"dev": "managed-os-dev", "prod": "managed-os"}
KUBERNETES_VERSION = "1.30.0"
CRD_GROUPS = ("kafka.strimzi.io/", "monitoring.coreos.com/")
UID = 10001

# Topics the manifests declare ahead of their constant in managed_os.events.
PENDING_TOPICS = frozenset({"managed-os.compliance.v1"})

# Every metric name the dashboard may query; each must be defined by the code. Those in
# SHARED_METRICS come from the shared library's registry, every service has them.
DASHBOARD_METRICS = frozenset(
    {
        "mos_http_requests_total",
        "mos_http_request_duration_seconds_bucket",
        "mos_outbox_published_total",
        "mos_outbox_backlog",
        "mos_consumer_lag",
        "mos_compliance_devices",
    }
)
SHARED_METRICS = (
    "mos_http_requests_total",
    "mos_http_request_duration_seconds_bucket",
    "mos_outbox_published_total",
    "mos_outbox_backlog",
    "mos_consumer_lag",
)

Obj = dict[str, Any]


# ---- rendering and lookup helpers ------------------------------------------------------------


@functools.cache
def _render(overlay: str) -> tuple[Obj, ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is required to render deploy/k8s (it has kustomize built in)")
    proc = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, f"kubectl kustomize {overlay} failed:\n{proc.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


def render(overlay: str) -> list[Obj]:
    """A fresh copy, so no test can change what another sees."""
    return copy.deepcopy(list(_render(overlay)))


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return cast(str, request.param)


def of_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def named(objs: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in of_kind(objs, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def deployment(objs: list[Obj], service: str) -> Obj:
    return named(objs, "Deployment", f"managed-os-{service}")


def workloads(objs: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    """(workload, its one container) for every Deployment and Job."""
    for obj in objs:
        if obj["kind"] in ("Deployment", "Job"):
            containers = obj["spec"]["template"]["spec"]["containers"]
            assert len(containers) == 1, obj["metadata"]["name"]
            yield obj, containers[0]


def service_of(container: Obj) -> str:
    """Which service a container runs: `serve <service>` or `migrate <service>`."""
    args = container.get("args", [])
    assert len(args) == 2 and args[0] in ("serve", "migrate"), args
    assert args[1] in SPECS, args
    return cast(str, args[1])


def env_names(service: str) -> dict[str, str]:
    """Environment variable → settings field, for every setting of `service`."""
    cls = load_spec(service).settings_cls
    prefix = cls.model_config["env_prefix"]
    return {f"{prefix}{field.upper()}": field for field in cls.model_fields}


def configmap_data(objs: list[Obj], container: Obj) -> dict[str, str]:
    data: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            data.update(named(objs, "ConfigMap", source["configMapRef"]["name"]).get("data", {}))
    return data


def secret_refs(container: Obj) -> dict[str, Obj]:
    """Variable → its secretKeyRef, for variables taken from a Secret key."""
    return {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }


def plain_env(objs: list[Obj], container: Obj) -> dict[str, str]:
    """Every variable given as a value: ConfigMap keys read with envFrom, then `env` values."""
    values = configmap_data(objs, container)
    values.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return values


def secret_fields(service: str) -> set[str]:
    cls = load_spec(service).settings_cls
    names = {n for n, f in cls.model_fields.items() if f.annotation is SecretStr}
    return names | {"database_url"}  # a URL with the database password in it


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (an empty selector selects everything)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def pod_labels(obj: Obj) -> dict[str, str]:
    return cast(dict[str, str], obj["spec"]["template"]["metadata"]["labels"])


def _peer(peer: Obj) -> str:
    return json.dumps(peer, sort_keys=True)


def ingress_peers(objs: list[Obj], labels: dict[str, str], port: int) -> set[str]:
    """Every peer some NetworkPolicy lets reach a pod with `labels` on TCP `port`."""
    peers: set[str] = set()
    for policy in of_kind(objs, "NetworkPolicy"):
        spec = policy["spec"]
        if "Ingress" not in spec["policyTypes"] or not selects(spec["podSelector"], labels):
            continue
        for rule in spec.get("ingress", []):
            ports = rule.get("ports")
            if ports is not None and not any(_covers(p, port) for p in ports):
                continue
            if "from" not in rule:
                peers.add("anywhere")
            peers.update(_peer(p) for p in rule.get("from", []))
    return peers


def egress_allowed(objs: list[Obj], labels: dict[str, str]) -> set[tuple[str, int, str]]:
    """(peer or "anywhere", port, protocol) a pod with `labels` may open connections to."""
    allowed: set[tuple[str, int, str]] = set()
    for policy in of_kind(objs, "NetworkPolicy"):
        spec = policy["spec"]
        if "Egress" not in spec["policyTypes"] or not selects(spec["podSelector"], labels):
            continue
        for rule in spec.get("egress", []):
            targets = [_peer(p) for p in rule.get("to", [])] or ["anywhere"]
            for port in rule.get("ports", []):
                for target in targets:
                    allowed.add((target, port["port"], port.get("protocol", "TCP")))
    return allowed


def _covers(port_spec: Obj, port: int) -> bool:
    start = port_spec.get("port")
    return start == port or (
        isinstance(start, int) and start <= port <= port_spec.get("endPort", start)
    )


def cpu(quantity: str | int | float) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def memory(quantity: str | int) -> int:
    text = str(quantity)
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


# ---- rendering and schemas ---------------------------------------------------------------------


def test_each_overlay_renders_every_service_with_its_parts(overlay: str) -> None:
    objs = render(overlay)
    for service in SPECS:
        assert deployment(objs, service)
        named(objs, "Service", f"managed-os-{service}")
        named(objs, "PodDisruptionBudget", f"managed-os-{service}")
        named(objs, "Job", f"managed-os-{service}-migrate")
    assert of_kind(objs, "NetworkPolicy")
    assert len(of_kind(objs, "ServiceMonitor")) == 1
    assert len(of_kind(objs, "KafkaTopic")) >= 4
    namespaced = [o for o in objs if o["kind"] != "Namespace"]
    assert {o["metadata"].get("namespace") for o in namespaced} == {NAMESPACES[overlay]}


def test_every_built_in_object_is_valid_for_kubernetes_1_30(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # kubernetes-validate reads its (large, read-only) schema files again for every object.
    read_schema = functools.cache(kubernetes_validate.utils.schema_contents)
    monkeypatch.setattr(kubernetes_validate.utils, "schema_contents", read_schema)
    checked = 0
    for obj in render(overlay):
        if obj["apiVersion"].startswith(CRD_GROUPS):
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(exc.message)
        checked += 1
    assert checked >= 30


def test_the_schema_check_rejects_a_misspelt_field() -> None:
    broken = deployment(render("prod"), "catalog")
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


# ---- workloads ---------------------------------------------------------------------------------


def test_every_pod_runs_unprivileged_read_only_and_within_limits(overlay: str) -> None:
    for obj, container in workloads(render(overlay)):
        where = obj["metadata"]["name"]
        pod = obj["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] == UID, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert pod["automountServiceAccountToken"] is False, where
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == UID, where
        assert sc["allowPrivilegeEscalation"] is False, where
        assert sc["readOnlyRootFilesystem"] is True, where
        assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"], where
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
        res = container["resources"]
        assert cpu(res["requests"]["cpu"]) <= cpu(res["limits"]["cpu"]), where
        assert memory(res["requests"]["memory"]) <= memory(res["limits"]["memory"]), where
        tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert len(tmp) == 1, f"{where}: no writable /tmp"
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[tmp[0]["name"]], where
        image = container["image"]
        assert ":" in image and not image.endswith(":latest"), f"{where}: unpinned {image}"


def test_deployments_serve_their_service_with_probes_and_a_drain(overlay: str) -> None:
    objs = render(overlay)
    for service in SPECS:
        dep = deployment(objs, service)
        pod = dep["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["args"] == ["serve", service]
        default_port = load_spec(service).settings_cls.model_fields["port"].default
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"http": default_port}
        prefix = load_spec(service).settings_cls.model_config["env_prefix"]
        assert configmap_data(objs, container)[f"{prefix}PORT"] == str(default_port)
        assert configmap_data(objs, container)[f"{prefix}HOST"] == "0.0.0.0"
        probes = {
            kind: (container[kind]["httpGet"]["path"], container[kind]["httpGet"]["port"])
            for kind in ("startupProbe", "livenessProbe", "readinessProbe")
        }
        assert probes == {
            "startupProbe": ("/healthz", "http"),
            "livenessProbe": ("/healthz", "http"),
            "readinessProbe": ("/readyz", "http"),
        }
        sleep = container["lifecycle"]["preStop"]["exec"]["command"]
        assert sleep[0] == "sleep" and 0 < int(sleep[1]) <= 15
        # uvicorn waits up to 20 s for in-flight requests, then the outbox flushes (10 s).
        assert pod["terminationGracePeriodSeconds"] >= max(30, int(sleep[1]) + 30)
        svc = named(objs, "Service", f"managed-os-{service}")
        assert selects({"matchLabels": svc["spec"]["selector"]}, pod_labels(dep))
        assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [
            (default_port, "http")
        ]
        assert selects(dep["spec"]["selector"], pod_labels(dep))
        pdb = named(objs, "PodDisruptionBudget", f"managed-os-{service}")
        assert selects(pdb["spec"]["selector"], pod_labels(dep))
        assert pdb["spec"].get("maxUnavailable") == 1, "a one-replica install must still drain"


def test_migration_jobs_migrate_their_service_once(overlay: str) -> None:
    objs = render(overlay)
    for service in SPECS:
        job = named(objs, "Job", f"managed-os-{service}-migrate")
        pod = job["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["args"] == ["migrate", service]
        assert pod["restartPolicy"] == "Never"
        prefix = load_spec(service).settings_cls.model_config["env_prefix"]
        assert f"{prefix}DATABASE_URL" in secret_refs(container)
        # A migration Job must not look like the service to its Service or NetworkPolicies.
        svc = named(objs, "Service", f"managed-os-{service}")
        assert not selects({"matchLabels": svc["spec"]["selector"]}, pod_labels(job))


# docs/operations.md applies everything but the services first, then waits for the Jobs.
BEFORE_ROLLOUT = {
    "matchExpressions": [
        {"key": "app.kubernetes.io/component", "operator": "NotIn", "values": list(SPECS)}
    ]
}


def test_the_pre_rollout_apply_brings_the_jobs_and_all_they_need_but_no_service(
    overlay: str,
) -> None:
    objs = render(overlay)
    first = {
        (o["kind"], o["metadata"]["name"])
        for o in objs
        if selects(BEFORE_ROLLOUT, o["metadata"].get("labels", {}))
    }
    assert not {kind for kind, _ in first} & {"Deployment", "Service"}
    for job in of_kind(objs, "Job"):
        assert ("Job", job["metadata"]["name"]) in first
        (container,) = job["spec"]["template"]["spec"]["containers"]
        for source in container.get("envFrom", []):
            assert ("ConfigMap", source["configMapRef"]["name"]) in first
        for ref in secret_refs(container).values():
            assert overlay == "prod" or ("Secret", ref["name"]) in first
    assert ("Namespace", NAMESPACES[overlay]) in first


def test_replicas_follow_the_overlay_and_the_autoscalers() -> None:
    dev, prod = render("dev"), render("prod")
    assert of_kind(dev, "HorizontalPodAutoscaler") == []
    for service in SPECS:
        assert deployment(dev, service)["spec"]["replicas"] == 1
        replicas = deployment(prod, service)["spec"]["replicas"]
        assert replicas >= 2
        hpa = named(prod, "HorizontalPodAutoscaler", f"managed-os-{service}")
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": f"managed-os-{service}",
        }
        assert hpa["spec"]["minReplicas"] == replicas <= hpa["spec"]["maxReplicas"]


# ---- settings and secrets ----------------------------------------------------------------------


def test_every_variable_set_is_a_setting_of_the_service_it_configures(overlay: str) -> None:
    objs = render(overlay)
    for obj, container in workloads(objs):
        service = service_of(container)
        known = env_names(service)
        where = f"{obj['metadata']['name']} ({service})"
        set_here = set(plain_env(objs, container)) | set(secret_refs(container))
        set_here |= {e["name"] for e in container.get("env", [])}
        unknown = set_here - set(known)
        assert not unknown, f"{where}: not settings of {service}: {sorted(unknown)}"
        for source in container.get("envFrom", []):
            assert "prefix" not in source, f"{where}: a prefix would rename every key"
            if "secretRef" in source:
                secret = named(objs, "Secret", source["secretRef"]["name"])
                assert set(secret.get("data", {})) <= set(known), where


def test_every_value_set_is_accepted_by_the_settings_class(overlay: str) -> None:
    objs = render(overlay)
    for _obj, container in workloads(objs):
        service = service_of(container)
        fields = env_names(service)
        values: dict[str, Any] = {fields[k]: v for k, v in plain_env(objs, container).items()}
        settings = load_spec(service).settings_cls(**values)
        assert settings.bus == "kafka" and settings.auto_migrate is False


def test_secret_settings_come_only_from_secrets_that_exist_or_are_external(overlay: str) -> None:
    objs = render(overlay)
    secrets = {s["metadata"]["name"]: s for s in of_kind(objs, "Secret")}
    for obj, container in workloads(objs):
        service = service_of(container)
        fields = env_names(service)
        where = obj["metadata"]["name"]
        for var in plain_env(objs, container):
            assert fields[var] not in secret_fields(service), f"{where}: {var} in plain text"
        for var, ref in secret_refs(container).items():
            if overlay == "prod":
                assert ref["name"] not in secrets, f"{where}: prod must not ship Secret values"
            elif not ref.get("optional", False):
                assert ref["key"] in secrets[ref["name"]]["data"], f"{where}: {var}"


def test_prod_runs_on_postgres_and_kafka_with_every_secret_from_a_secret() -> None:
    objs = render("prod")
    assert of_kind(objs, "Secret") == []
    for obj, container in workloads(objs):
        service = service_of(container)
        prefix = load_spec(service).settings_cls.model_config["env_prefix"]
        values = plain_env(objs, container)
        refs = secret_refs(container)
        where = obj["metadata"]["name"]
        for var, value in values.items():
            assert not re.search(r"sqlite|inprocess|bundled:", value), f"{where}: {var}={value}"
        assert values[f"{prefix}BUS"] == "kafka", where
        assert values[f"{prefix}AUTO_MIGRATE"] == "false", where
        assert not refs[f"{prefix}DATABASE_URL"].get("optional", False), where
        if obj["kind"] == "Deployment":
            assert not refs[f"{prefix}AUTH_SECRET"].get("optional", False), where
        if service == "device-channel" and obj["kind"] == "Deployment":
            assert not refs[f"{prefix}HMAC_KEY"].get("optional", False)
            assert values.get(f"{prefix}ALLOW_UNSIGNED", "false") == "false"
        if service == "catalog" and obj["kind"] == "Deployment":
            assert values[f"{prefix}GDMF_URL"].startswith("https://")
            assert values[f"{prefix}CA_BUNDLE"].startswith("/etc/managed-os/ca/")
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert str(Path(values[f"{prefix}CA_BUNDLE"]).parent) in mounts


def test_dev_can_serve_with_its_generated_secrets_which_say_they_are_dev_only() -> None:
    objs = render("dev")
    secrets = {s["metadata"]["name"]: s for s in of_kind(objs, "Secret")}
    for secret in secrets.values():
        for key, encoded in secret["data"].items():
            assert "dev" in base64.b64decode(encoded).decode(), key
    for service in SPECS:
        (container,) = deployment(objs, service)["spec"]["template"]["spec"]["containers"]
        fields = env_names(service)
        values: dict[str, Any] = {fields[k]: v for k, v in plain_env(objs, container).items()}
        for var, ref in secret_refs(container).items():
            data = secrets[ref["name"]]["data"]
            if ref["key"] in data:
                values[fields[var]] = base64.b64decode(data[ref["key"]]).decode()
        settings = load_spec(service).settings_cls(**values)
        settings.check_serving()
        assert settings.database_url.startswith("postgresql+asyncpg://")
        assert settings.auth_secret.get_secret_value()


# ---- network policies --------------------------------------------------------------------------

SAME_NAMESPACE = _peer({"podSelector": {}})
INGRESS_CONTROLLER = _peer(
    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
)
MONITORING = _peer(
    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
)
MDM_SERVER = _peer(
    {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "nanomdm"}}}
)


def test_ingress_is_denied_by_default_and_opened_per_port(overlay: str) -> None:
    objs = render(overlay)
    deny = [
        p
        for p in of_kind(objs, "NetworkPolicy")
        if p["spec"]["podSelector"] == {} and p["spec"]["policyTypes"] == ["Ingress"]
    ]
    assert any("ingress" not in p["spec"] for p in deny), "no default-deny ingress policy"
    for service in SPECS:
        dep = deployment(objs, service)
        port = load_spec(service).settings_cls.model_fields["port"].default
        expected = {SAME_NAMESPACE, INGRESS_CONTROLLER, MONITORING}
        if service == "device-channel":
            expected.add(MDM_SERVER)
        assert ingress_peers(objs, pod_labels(dep), port) == expected, service
        assert ingress_peers(objs, pod_labels(dep), 5432) == set(), service
    for job in of_kind(objs, "Job"):
        assert ingress_peers(objs, pod_labels(job), 8081) == set()


def test_egress_reaches_only_dns_postgres_kafka_and_each_services_peers(overlay: str) -> None:
    objs = render(overlay)
    catalog = pod_labels(deployment(objs, "catalog"))
    declarations = pod_labels(deployment(objs, "declarations"))
    for obj, _container in workloads(objs):
        allowed = egress_allowed(objs, pod_labels(obj))
        where = obj["metadata"]["name"]
        for need in (("anywhere", 53, "UDP"), ("anywhere", 5432, "TCP"), ("anywhere", 9092, "TCP")):
            assert need in allowed, f"{where}: {need}"
        https = ("anywhere", 443, "TCP") in allowed
        assert https == (obj["metadata"]["name"] == "managed-os-catalog"), where
    for service, (target, port) in {
        "declarations": (catalog, 8081),
        "device-channel": (declarations, 8082),
        "compliance": (declarations, 8082),
    }.items():
        allowed = egress_allowed(objs, pod_labels(deployment(objs, service)))
        assert any(
            p == port and t != "anywhere" and selects(json.loads(t)["podSelector"], target)
            for t, p, _ in allowed
        ), service


# ---- Kafka topics and scraping (CRDs: structural checks) ---------------------------------------


def event_topics() -> set[str]:
    return {v for k, v in vars(events).items() if k.startswith("TOPIC_") and isinstance(v, str)}


def test_every_event_topic_is_declared_with_explained_partitions_and_retention(
    overlay: str,
) -> None:
    objs = render(overlay)
    topics = {t["spec"]["topicName"]: t for t in of_kind(objs, "KafkaTopic")}
    assert set(topics) == event_topics() | PENDING_TOPICS
    for name, topic in topics.items():
        assert topic["apiVersion"] == "kafka.strimzi.io/v1beta2"
        assert topic["metadata"]["name"] == name
        assert topic["metadata"]["labels"]["strimzi.io/cluster"]
        spec = topic["spec"]
        assert set(spec) <= {"topicName", "partitions", "replicas", "config"}, name
        assert isinstance(spec["partitions"], int) and spec["partitions"] >= 1
        assert isinstance(spec["replicas"], int) and spec["replicas"] >= 1
        config = spec["config"]
        assert isinstance(config["retention.ms"], int) and config["retention.ms"] >= 86_400_000
        assert config["cleanup.policy"] == "delete"
        insync = config["min.insync.replicas"]
        assert insync == (1 if spec["replicas"] == 1 else spec["replicas"] - 1), name
    assert {t["spec"]["replicas"] for t in topics.values()} == {1 if overlay == "dev" else 3}


def declared_consumers(service: str) -> list[ConsumerSpec]:
    """The consumer groups a service subscribes, declared against a context that is never
    started (an engine that has not connected, an idle in-process bus)."""
    spec = load_spec(service)
    ctx = ServiceContext(
        spec,
        spec.settings_cls(),
        make_engine("sqlite+aiosqlite://"),
        InProcessBus(),
        SystemClock(),
        Metrics.create(service),
    )
    return list(spec.consumers(ctx))


def test_no_consumer_can_outnumber_the_partitions_of_its_topic() -> None:
    objs = render("prod")
    partitions = {
        t["spec"]["topicName"]: t["spec"]["partitions"] for t in of_kind(objs, "KafkaTopic")
    }
    for service in SPECS:
        hpa = named(objs, "HorizontalPodAutoscaler", f"managed-os-{service}")
        for consumer in declared_consumers(service):
            for topic in consumer.topics:
                # Each replica runs `members` members of the group.
                members = hpa["spec"]["maxReplicas"] * consumer.members
                assert partitions[topic] >= members, (service, topic)


def test_no_topic_outlives_the_memory_of_its_idempotent_consumers() -> None:
    """A consumer that prunes processed event ids after N days must not be able to replay
    (from the earliest offset) an event older than that: it would apply it a second time."""
    objs = render("prod")
    retention = {
        t["spec"]["topicName"]: t["spec"]["config"]["retention.ms"]
        for t in of_kind(objs, "KafkaTopic")
    }
    for service in SPECS:
        fields = env_names(service)
        if "inbox_retention_days" not in fields.values():
            continue
        (container,) = deployment(objs, service)["spec"]["template"]["spec"]["containers"]
        values: dict[str, Any] = {fields[k]: v for k, v in plain_env(objs, container).items()}
        days = load_spec(service).settings_cls(**values).inbox_retention_days  # type: ignore[attr-defined]
        for consumer in declared_consumers(service):
            for topic in consumer.topics:
                assert retention[topic] <= days * 86_400_000, (service, topic)


def test_the_service_monitor_scrapes_metrics_of_all_four_services(overlay: str) -> None:
    objs = render(overlay)
    (monitor,) = of_kind(objs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    spec = monitor["spec"]
    scraped = [
        s for s in of_kind(objs, "Service") if selects(spec["selector"], s["metadata"]["labels"])
    ]
    assert sorted(s["metadata"]["name"] for s in scraped) == sorted(
        f"managed-os-{name}" for name in SPECS
    )
    for endpoint in spec["endpoints"]:
        assert endpoint["path"] == "/metrics"
        # The metrics' own `service` label must survive the operator's target labels.
        assert endpoint["honorLabels"] is True
        for svc in scraped:
            assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}


# ---- Dockerfile ----------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def test_dockerfile_bases_are_pinned_python_3_11_slim_images() -> None:
    bases = [args.split()[0] for word, args in dockerfile() if word == "FROM"]
    assert len(bases) >= 2, "multi-stage: a builder and a runtime stage"
    for base in bases:
        name, _, tag = base.partition(":")
        assert name == "python", base
        assert re.fullmatch(r"3\.11\.\d+-slim-bookworm", tag), f"{base}: pin an exact version"


def test_the_runtime_stage_is_unprivileged_and_has_no_build_tools() -> None:
    stage = final_stage()
    users = [args for word, args in stage if word == "USER"]
    assert users, "the runtime stage must set USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0") and int(user) == UID
    assert any(word == "COPY" and "--from=builder" in args for word, args in stage)
    for word, args in stage:
        if word == "RUN":
            assert not re.search(r"\b(gcc|g\+\+|clang|build-essential|make|pip install)\b", args)
    for word, args in dockerfile():
        if word in ("ARG", "ENV"):
            names = re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", args) or [args.split()[0]]
            for name in names:
                assert not re.search(r"SECRET|PASSWORD|KEY|TOKEN", name, re.I), name


def test_the_image_runs_the_cli_and_checks_health_on_the_service_port() -> None:
    stage = dict(final_stage())
    assert json.loads(stage["ENTRYPOINT"]) == ["managed-os"]
    command = json.loads(stage["CMD"])
    assert command[0] == "serve" and command[1] in SPECS
    exposed = {int(p) for p in stage["EXPOSE"].split()}
    defaults = {n: load_spec(n).settings_cls.model_fields["port"].default for n in SPECS}
    assert exposed == set(defaults.values())
    check = stage["HEALTHCHECK"]
    assert "/healthz" in check and not re.search(r"\b(curl|wget)\b", check)
    ports = ast.literal_eval(re.search(r"ports = (\{[^}]*\})", check).group(1))  # type: ignore[union-attr]
    assert ports == defaults


def test_the_build_context_has_the_sources_and_nothing_else_heavy() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for must in (".git", ".venv", "data", "tests", "bench", ".mypy_cache", "**/__pycache__"):
        assert must in patterns, must
    for word, args in dockerfile():
        if word == "COPY" and "--from" not in args:
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), source
                assert not any(fnmatch.fnmatch(source.rstrip("/"), p) for p in patterns), source


# ---- Grafana dashboard -------------------------------------------------------------------------

PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset"}


def dashboard_exprs() -> list[tuple[str, str]]:
    board = json.loads((ROOT / "deploy" / "grafana" / "managed-os.json").read_text())
    return [(p["title"], t["expr"]) for p in board["panels"] for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels and keywords removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        following = text[match.end() :].lstrip()[:1]
        if following != "(" and match.group() not in PROMQL_KEYWORDS:
            names.add(match.group())
    return names


def test_metric_name_extraction_sees_through_promql() -> None:
    expr = 'histogram_quantile(0.9, sum by (le) (rate(a_b{route=~"x|y"}[5m]))) / on(job) c'
    assert metric_names(expr) == {"a_b", "c"}


def test_the_dashboard_uses_only_metrics_the_services_expose() -> None:
    board = json.loads((ROOT / "deploy" / "grafana" / "managed-os.json").read_text())
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    used: set[str] = set()
    for title, expr in dashboard_exprs():
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr}"
        assert names <= DASHBOARD_METRICS, f"{title}: unknown {names - DASHBOARD_METRICS}"
        used |= names
    assert used == DASHBOARD_METRICS
    quantiles = {
        m.group(1)
        for _, e in dashboard_exprs()
        for m in re.finditer(r"histogram_quantile\(([\d.]+)", e)
    }
    assert {"0.5", "0.99"} <= quantiles


def test_metrics_the_dashboard_relies_on_are_defined_by_the_code() -> None:
    metrics = Metrics.create("catalog")
    HttpMetrics("catalog", metrics.registry)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    exposed = {
        family.name + suffix
        for family in metrics.registry.collect()
        for suffix in suffixes.get(family.type, ())
    }
    assert set(SHARED_METRICS) <= exposed, set(SHARED_METRICS) - exposed
    # Service-specific metrics are registered when a service starts: find their definitions.
    sources = "\n".join(
        path.read_text()
        for folder in ("shared", "services")
        for path in (ROOT / folder).rglob("*.py")
    )
    for name in DASHBOARD_METRICS - exposed:
        base = re.sub(r"_(total|bucket|count|sum)$", "", name)
        assert f'"{name}"' in sources or f'"{base}"' in sources, f"{name} is defined nowhere"


def test_dashboard_routes_are_routes_of_the_device_channel() -> None:
    routes = {r.path for router in load_spec("device-channel").routers for r in router.routes}  # type: ignore[attr-defined]
    syncs = {
        "/ddm/tokens",
        "/ddm/declaration-items",
        "/ddm/declaration/{category}/{identifier}",
        "/mdm/checkin",
    }
    assert syncs | {"/ddm/status"} <= routes
    titles = set()
    for title, expr in dashboard_exprs():
        for op, pattern in re.findall(r'route(=~|=)"([^"]*)"', expr):
            matched = {r for r in routes if re.fullmatch(pattern, r)} if op == "=~" else {pattern}
            assert matched <= routes and matched, f"{title}: {pattern}"
            for alternative in pattern.split("|") if op == "=~" else ():
                assert any(re.fullmatch(alternative, r) for r in routes), alternative
            if title == "DDM syncs per second":
                assert matched == syncs
            if title == "Status reports per second":
                assert matched == {"/ddm/status"}
            titles.add(title)
    assert {"DDM syncs per second", "Status reports per second"} <= titles


# ---- docs/operations.md --------------------------------------------------------------------------


def settings_table() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "settings_table", ROOT / "scripts" / "settings_table.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_operations_doc_lists_every_setting_as_the_script_generates_it() -> None:
    doc = (ROOT / "docs" / "operations.md").read_text()
    for service in SPECS:
        for var in env_names(service):
            assert f"`{var}`" in doc, var
    script = settings_table()
    assert script.block() in doc, (
        "docs/operations.md is stale: run "
        ".venv/bin/python scripts/settings_table.py --write docs/operations.md"
    )
