"""The Kubernetes manifests under k8s/ parse, build, validate and keep Handoff's invariants."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from services.ingest.memory_budget import DEFAULT_BUDGET_BYTES, MIB, process_memory_bytes

# PyYAML: a dev dependency. Imported this way so the suite still runs (and mypy stays
# strict) on a machine where it or its stubs are missing; these tests then skip.
yaml = pytest.importorskip("yaml")

Manifest = dict[str, Any]

K8S = Path(__file__).resolve().parents[2] / "k8s"
BASE = K8S / "base"
OVERLAYS = ("dev", "production")
KUBERNETES_VERSION = "1.30.0"
# Custom resources that kubernetes-validate has no schema for.
CRD_API_GROUPS = frozenset({"postgresql.cnpg.io"})

GRPC_PORTS = {"ingest": 50051, "scheduler": 50052, "delivery": 50053, "export": 50054}
EXPORT_HTTP_PORT = 8080
APP_USER = 10001


def _service_env_names() -> frozenset[str]:
    """Every environment variable a Handoff process reads (services/common/config.py)."""
    names = {
        "DATABASE_URL",
        "HANDOFF_SHUTDOWN_GRACE_S",
        "HANDOFF_SHUTDOWN_DRAIN_S",
        "HANDOFF_LOG_LEVEL",
        "HANDOFF_LOG_FORMAT",
        "OTEL_SERVICE_NAME",
        "OTEL_TRACES_EXPORTER",
        "OTEL_METRICS_EXPORTER",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "HANDOFF_EXPORT_HTTP_HOST",
        "HANDOFF_EXPORT_HTTP_PORT",
        "HANDOFF_EXPORT_REPLICA_URL",
        "HANDOFF_EXPORT_MAX_STREAMS",
        "HANDOFF_TLS_CERT_FILE",
        "HANDOFF_TLS_KEY_FILE",
        "HANDOFF_TLS_TERMINATED_UPSTREAM",
        "HANDOFF_AUTH_CACHE_TTL_S",
        "HANDOFF_GRPC_REFLECTION",
        "HANDOFF_SECRET_KEYS",
        "HANDOFF_EGRESS_ALLOW",
        "HANDOFF_SCHEDULER_DELIVERY_TARGET",
        "HANDOFF_SCHEDULER_TOKEN",
        "HANDOFF_SMTP_HOST",
        "HANDOFF_SMTP_PORT",
        "HANDOFF_SMTP_TLS",
        "HANDOFF_SMTP_USERNAME",
        "HANDOFF_SMTP_PASSWORD",
        "HANDOFF_SMTP_FROM",
        "HANDOFF_SMTP_CA_FILE",
        "HANDOFF_SMTP_MAX_MESSAGE_BYTES",
        "HANDOFF_EMAIL_SPOOL_DIR",
        "HANDOFF_EMAIL_SPOOL_MAX_BYTES",
        "HANDOFF_LINK_BASE_URL",
        "HANDOFF_RECIPIENT_LINK_TTL_S",
        "HANDOFF_DOWNLOAD_LINK_TTL_S",
        "HANDOFF_INGEST_MEMORY_BUDGET_MB",
        "HANDOFF_INGEST_STREAM_IDLE_S",
        "HANDOFF_INGEST_WORKERS",
    }
    for service in GRPC_PORTS:
        for setting in ("HOST", "PORT", "DB_POOL_MIN", "DB_POOL_MAX", "MAX_CONCURRENT_RPCS"):
            names.add(f"HANDOFF_{service.upper()}_{setting}")
    return frozenset(names)


SERVICE_ENV_NAMES = _service_env_names()


# --- loading ------------------------------------------------------------------------------


def _documents(path: Path) -> list[Manifest]:
    """The non-empty YAML documents of one file, each a mapping."""
    documents: list[Manifest] = []
    for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        if document is None:
            continue
        assert isinstance(document, dict), f"{path}: a document is not a mapping"
        documents.append(document)
    return documents


def _yaml_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*") if p.suffix in {".yaml", ".yml"})


def _kustomization_dirs() -> list[Path]:
    return sorted(p.parent for p in K8S.rglob("kustomization.yaml"))


def _resource_files() -> list[Path]:
    """Files holding Kubernetes objects (not kustomize's own configuration)."""
    return [p for p in _yaml_files() if p.name != "kustomization.yaml"]


def _kustomization(directory: Path) -> Manifest:
    (document,) = _documents(directory / "kustomization.yaml")
    return document


def _objects(kind: str, directory: Path = BASE) -> list[Manifest]:
    return [
        doc
        for path in sorted(directory.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in _documents(path)
        if doc["kind"] == kind
    ]


def _base_deployments() -> dict[str, Manifest]:
    return {d["metadata"]["name"]: d for d in _objects("Deployment")}


def _workloads() -> list[Manifest]:
    """Every Deployment, StatefulSet, DaemonSet and Job in any manifest file."""
    kinds = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
    return [doc for p in _resource_files() for doc in _documents(p) if doc["kind"] in kinds]


def _pod_spec(workload: Manifest) -> Manifest:
    spec: Manifest = workload["spec"]["template"]["spec"]
    return spec


def _all_containers(workload: Manifest) -> list[Manifest]:
    spec = _pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def _main_container(deployment: Manifest) -> Manifest:
    containers: list[Manifest] = _pod_spec(deployment)["containers"]
    assert len(containers) == 1, deployment["metadata"]["name"]
    return containers[0]


def _env_literals(container: Manifest) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def _generator_literals(kustomization: Manifest, name: str) -> dict[str, str]:
    literals: dict[str, str] = {}
    for generator in kustomization.get("configMapGenerator", []):
        if generator["name"] == name:
            for literal in generator.get("literals", []):
                key, _, value = literal.partition("=")
                literals[key] = value
    return literals


def _workload_ids() -> list[str]:
    return [f"{w['kind']}/{w['metadata']['name']}" for w in _workloads()]


_QUANTITY = re.compile(r"^([0-9.]+)(m|Ki|Mi|Gi|Ti)?$")
_SCALE = {None: 1.0, "m": 1e-3, "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40}


def _quantity(value: str | int) -> float:
    match = _QUANTITY.match(str(value))
    assert match, f"unsupported quantity {value!r}"
    return float(match.group(1)) * _SCALE[match.group(2)]


# --- the files ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_yaml_file_parses_into_kubernetes_objects(path: Path) -> None:
    documents = _documents(path)
    assert documents, f"{path} is empty"
    for document in documents:
        assert document.get("apiVersion"), path
        assert document.get("kind"), path


@pytest.mark.parametrize("directory", _kustomization_dirs(), ids=lambda p: p.name)
def test_kustomization_lists_every_yaml_file_in_its_folder(directory: Path) -> None:
    kustomization = _kustomization(directory)
    referenced = set(kustomization.get("resources", []))
    for patch in kustomization.get("patches", []):
        if "path" in patch:
            referenced.add(patch["path"])
    for generator in [
        *kustomization.get("configMapGenerator", []),
        *kustomization.get("secretGenerator", []),
    ]:
        referenced.update(generator.get("files", []), generator.get("envs", []))
    for reference in referenced:
        assert (directory / reference).exists(), f"{directory}: {reference} does not exist"
    on_disk = {p.name for p in directory.iterdir() if p.suffix in {".yaml", ".yml"}} - {
        "kustomization.yaml"
    }
    assert on_disk <= referenced, f"{directory}: not in kustomization: {on_disk - referenced}"


def test_base_has_one_file_per_service_with_account_deployment_and_service() -> None:
    for service in GRPC_PORTS:
        kinds = {doc["kind"]: doc for doc in _documents(BASE / f"{service}.yaml")}
        assert {"ServiceAccount", "Deployment", "Service"} <= kinds.keys(), service
        account = kinds["ServiceAccount"]
        assert account["automountServiceAccountToken"] is False, service
        pod = _pod_spec(kinds["Deployment"])
        assert pod["serviceAccountName"] == account["metadata"]["name"], service
        assert pod["automountServiceAccountToken"] is False, service
        # Service links would inject variables such as INGEST_PORT=tcp://... into the pods.
        assert pod["enableServiceLinks"] is False, service


def test_base_contains_no_secret_and_reads_database_url_from_handoff_database() -> None:
    assert not _objects("Secret")
    assert not _kustomization(BASE).get("secretGenerator")
    for name, deployment in _base_deployments().items():
        for container in _all_containers(deployment):
            (database_url,) = [e for e in container["env"] if e["name"] == "DATABASE_URL"]
            assert database_url["valueFrom"]["secretKeyRef"] == {
                "name": "handoff-database",
                "key": "url",
            }, f"{name}/{container['name']}"


# --- pods ---------------------------------------------------------------------------------


@pytest.mark.parametrize("workload", _workloads(), ids=_workload_ids())
def test_containers_run_as_non_root_on_a_read_only_root_filesystem(workload: Manifest) -> None:
    pod = _pod_spec(workload)
    pod_context = pod.get("securityContext", {})
    assert pod_context.get("seccompProfile", {}).get("type") == "RuntimeDefault"
    for container in _all_containers(workload):
        context = {**pod_context, **container.get("securityContext", {})}
        where = f"{workload['metadata']['name']}/{container['name']}"
        assert context.get("runAsNonRoot") is True, where
        assert context.get("runAsUser", 0) != 0, where
        if container["image"].startswith("handoff"):
            assert context["runAsUser"] == APP_USER, where
        assert context.get("readOnlyRootFilesystem") is True, where
        assert context.get("allowPrivilegeEscalation") is False, where
        assert context.get("privileged", False) is False, where
        assert context.get("capabilities", {}).get("drop") == ["ALL"], where
        assert context.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        # Python (and PostgreSQL) still need a writable /tmp.
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        assert "/tmp" in mounts, where


@pytest.mark.parametrize("workload", _workloads(), ids=_workload_ids())
def test_containers_have_resource_requests_within_limits(workload: Manifest) -> None:
    for container in _all_containers(workload):
        where = f"{workload['metadata']['name']}/{container['name']}"
        resources = container.get("resources", {})
        for resource in ("cpu", "memory"):
            request = resources.get("requests", {}).get(resource)
            limit = resources.get("limits", {}).get(resource)
            assert request is not None, f"{where}: no {resource} request"
            assert limit is not None, f"{where}: no {resource} limit"
            assert _quantity(request) <= _quantity(limit), f"{where}: {resource}"


def test_ingest_memory_limit_holds_its_memory_budget_and_the_messages_in_transit() -> None:
    container = _main_container(_base_deployments()["ingest"])
    env = _env_literals(container)
    budget_mib = int(env.get("HANDOFF_INGEST_MEMORY_BUDGET_MB", DEFAULT_BUDGET_BYTES // MIB))
    workers = int(env.get("HANDOFF_INGEST_WORKERS", "1"))
    needed = workers * process_memory_bytes(budget_mib * MIB)
    limit = _quantity(container["resources"]["limits"]["memory"])
    assert limit >= needed, f"ingest's memory limit {limit / MIB:.0f} MiB < {needed / MIB:.0f} MiB"
    # Not far above either: the budget is what keeps the process inside the limit.
    assert limit <= needed * 1.25


@pytest.mark.parametrize("service", GRPC_PORTS)
def test_probes_are_grpc_on_the_port_the_environment_sets(service: str) -> None:
    deployment = _base_deployments()[service]
    container = _main_container(deployment)
    assert container["command"] == ["python", "-m", f"services.{service}"]
    env = _env_literals(container)
    prefix = f"HANDOFF_{service.upper()}_"
    assert env[prefix + "HOST"] == "0.0.0.0"
    port = int(env[prefix + "PORT"])
    assert port == GRPC_PORTS[service]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["grpc"] == port
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == port, probe
    readiness = container["readinessProbe"]
    if "httpGet" in readiness:
        # Only export has an HTTP face; its readiness may follow /readyz there.
        assert service == "export"
        http_port = int(env["HANDOFF_EXPORT_HTTP_PORT"])
        assert http_port == EXPORT_HTTP_PORT == ports["http"]
        assert env["HANDOFF_EXPORT_HTTP_HOST"] == "0.0.0.0"
        assert readiness["httpGet"] == {"path": "/readyz", "port": http_port}
    else:
        assert readiness["grpc"] == {"port": port, "service": "readiness"}


@pytest.mark.parametrize("service", GRPC_PORTS)
def test_service_ports_match_container_ports(service: str) -> None:
    (svc,) = [s for s in _objects("Service") if s["metadata"]["name"] == service]
    deployment = _base_deployments()[service]
    template_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= template_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]
    container_ports = {p["name"]: p["containerPort"] for p in _main_container(deployment)["ports"]}
    service_ports = svc["spec"]["ports"]
    assert {p["name"] for p in service_ports} == container_ports.keys()
    for port in service_ports:
        target = port["targetPort"]
        number = container_ports[target] if isinstance(target, str) else target
        assert number == port["port"] == container_ports[port["name"]], port


def test_env_names_are_ones_the_services_read() -> None:
    for name, deployment in _base_deployments().items():
        assert len(_all_containers(deployment)) == 2, f"{name}: migrate + the service"
        (init,) = _pod_spec(deployment)["initContainers"]
        assert {e["name"] for e in init["env"]} == {"DATABASE_URL"}, name
        container = _main_container(deployment)
        env_names = {e["name"] for e in container["env"]}
        assert env_names <= SERVICE_ENV_NAMES, f"{name}: {env_names - SERVICE_ENV_NAMES}"
        for other in GRPC_PORTS.keys() - {name}:
            prefix = f"HANDOFF_{other.upper()}_"
            assert not [n for n in env_names if n.startswith(prefix)], f"{name} sets {prefix}*"
        config_refs = [r["configMapRef"]["name"] for r in container["envFrom"]]
        assert config_refs == ["handoff-config"], name
    for directory in _kustomization_dirs():
        literals = _generator_literals(_kustomization(directory), "handoff-config")
        assert literals.keys() <= SERVICE_ENV_NAMES, directory


def test_termination_grace_outlasts_the_shutdown_grace() -> None:
    grace_values = [
        float(literals["HANDOFF_SHUTDOWN_GRACE_S"])
        + float(literals.get("HANDOFF_SHUTDOWN_DRAIN_S", "0"))
        for directory in _kustomization_dirs()
        if "HANDOFF_SHUTDOWN_GRACE_S"
        in (literals := _generator_literals(_kustomization(directory), "handoff-config"))
    ]
    assert grace_values, "HANDOFF_SHUTDOWN_GRACE_S is set in the base ConfigMap"
    for name, deployment in _base_deployments().items():
        termination = _pod_spec(deployment)["terminationGracePeriodSeconds"]
        # Room after the drain and the gRPC grace for closing the pool and flushing telemetry.
        assert termination >= max(grace_values) + 5, name
        assert "lifecycle" not in _main_container(deployment), f"{name}: no preStop hook"


def test_migrations_run_in_an_init_container_of_every_deployment() -> None:
    for name, deployment in _base_deployments().items():
        (init,) = _pod_spec(deployment)["initContainers"]
        assert init["command"] == ["python", "-m", "services.common.migrate"], name
        assert init["image"] == _main_container(deployment)["image"], name


def test_pods_follow_app_kubernetes_io_labels_and_spread_over_nodes_and_zones() -> None:
    for name, deployment in _base_deployments().items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == name
        assert labels["app.kubernetes.io/part-of"] == "handoff"
        assert "app.kubernetes.io/component" in labels
        selector = deployment["spec"]["selector"]["matchLabels"]
        constraints = _pod_spec(deployment)["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in constraints} == {
            "kubernetes.io/hostname",
            "topology.kubernetes.io/zone",
        }, name
        for constraint in constraints:
            assert constraint["labelSelector"]["matchLabels"] == selector, name
    for path in _resource_files():
        for document in _documents(path):
            if document["kind"] != "Namespace":
                assert "app.kubernetes.io/name" in document["metadata"].get("labels", {}), path


def test_disruption_budgets_cover_ingest_and_export() -> None:
    budgets = {b["metadata"]["name"]: b for b in _objects("PodDisruptionBudget")}
    assert budgets.keys() == {"ingest", "export"}
    deployments = _base_deployments()
    for name, budget in budgets.items():
        assert budget["spec"]["selector"] == deployments[name]["spec"]["selector"]
        # maxUnavailable (not minAvailable) so a one-replica dev cluster can still drain.
        assert budget["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("path", _resource_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_file_passes_kubernetes_validate_strict(path: Path) -> None:
    validator = pytest.importorskip("kubernetes_validate")
    _validate_all(validator, _documents(path))


def _validate_all(validator: Any, documents: list[Manifest]) -> None:
    """Validate against the bundled (offline) schemas; custom resources are skipped."""
    for document in documents:
        if document["apiVersion"].split("/")[0] in CRD_API_GROUPS:
            continue
        try:
            validator.validate(document, KUBERNETES_VERSION, strict=True)
        except validator.ValidationError as exc:
            pytest.fail(f"{document['kind']}/{document['metadata']['name']}: {exc.message}")


# --- the overlays, as kustomize renders them ----------------------------------------------


@functools.cache
def _render(overlay: str) -> tuple[Manifest, ...]:
    kubectl = shutil.which("kubectl")
    kustomize = shutil.which("kustomize")
    if kubectl:
        command = [kubectl, "kustomize", str(K8S / "overlays" / overlay)]
    elif kustomize:
        command = [kustomize, "build", str(K8S / "overlays" / overlay)]
    else:
        pytest.skip("neither kubectl nor kustomize is installed")
    built = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    assert built.returncode == 0, built.stderr
    return tuple(doc for doc in yaml.safe_load_all(built.stdout) if doc)


def _rendered(overlay: str, kind: str) -> dict[str, Manifest]:
    return {d["metadata"]["name"]: d for d in _render(overlay) if d["kind"] == kind}


def _rendered_config(overlay: str) -> dict[str, str]:
    (config,) = [
        d
        for d in _render(overlay)
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("handoff-config-")
    ]
    data: dict[str, str] = config["data"]
    return data


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_builds_into_namespaced_objects_with_pinned_images(overlay: str) -> None:
    documents = _render(overlay)
    (namespace,) = [d for d in documents if d["kind"] == "Namespace"]
    for document in documents:
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] == namespace["metadata"]["name"]
    deployments = _rendered(overlay, "Deployment")
    assert deployments.keys() == GRPC_PORTS.keys()
    for name, deployment in deployments.items():
        for container in _all_containers(deployment):
            image = container["image"]
            assert ":" in image, f"{name}: {image} has no tag"
            assert not image.endswith(":latest"), f"{name}: {image}"
        # The generated ConfigMap's hashed name is wired through.
        (config_ref,) = _main_container(deployment)["envFrom"]
        assert config_ref["configMapRef"]["name"].startswith("handoff-config-"), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_overlay_passes_kubernetes_validate_strict(overlay: str) -> None:
    validator = pytest.importorskip("kubernetes_validate")
    _validate_all(validator, list(_render(overlay)))


def test_dev_overlay_runs_one_replica_with_console_telemetry_and_a_local_database() -> None:
    for name, deployment in _rendered("dev", "Deployment").items():
        assert deployment["spec"]["replicas"] == 1, name
    config = _rendered_config("dev")
    assert config["OTEL_TRACES_EXPORTER"] == config["OTEL_METRICS_EXPORTER"] == "console"
    secrets = [s for s in _rendered("dev", "Secret") if s.startswith("handoff-database-")]
    assert len(secrets) == 1
    for deployment in _rendered("dev", "Deployment").values():
        for container in _all_containers(deployment):
            ref = container["env"][0]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": secrets[0], "key": "url"}
    assert "postgres" in _rendered("dev", "StatefulSet")


def test_production_overlay_scales_exports_otlp_and_uses_the_cloudnativepg_secret() -> None:
    documents = _render("production")
    clusters = [d for d in documents if d["kind"] == "Cluster"]
    assert [c["apiVersion"] for c in clusters] == ["postgresql.cnpg.io/v1"]
    app_secret = f"{clusters[0]['metadata']['name']}-app"
    for name, deployment in _rendered("production", "Deployment").items():
        for container in _all_containers(deployment):
            (database_url,) = [e for e in container["env"] if e["name"] == "DATABASE_URL"]
            ref = database_url["valueFrom"]["secretKeyRef"]
            assert ref == {"name": app_secret, "key": "uri"}, f"{name}/{container['name']}"
    autoscalers = {
        h["spec"]["scaleTargetRef"]["name"]: h
        for h in _rendered("production", "HorizontalPodAutoscaler").values()
    }
    assert autoscalers.keys() == {"ingest", "export"}
    for name, autoscaler in autoscalers.items():
        assert autoscaler["spec"]["minReplicas"] >= 2, name
        (metric,) = autoscaler["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu", name
    for name, deployment in _rendered("production", "Deployment").items():
        if name in autoscalers:
            # The autoscaler owns the count; a fixed one would be reset by every apply.
            assert "replicas" not in deployment["spec"], name
        else:
            assert deployment["spec"]["replicas"] >= 2, name
    config = _rendered_config("production")
    assert config["OTEL_TRACES_EXPORTER"] == config["OTEL_METRICS_EXPORTER"] == "otlp"
    assert config["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert not [d for d in documents if d["kind"] == "Secret"]


@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_overlays_say_how_credentials_reach_the_pods_encrypted(overlay: str) -> None:
    # The services listen on 0.0.0.0 in the cluster and refuse a credential that arrives
    # over plaintext from another host, so every overlay serves TLS itself or states that
    # a mesh terminates it in front; none switches the access check off.
    config = _rendered_config(overlay)
    serves_tls = bool(config.get("HANDOFF_TLS_CERT_FILE"))
    assert serves_tls or config.get("HANDOFF_TLS_TERMINATED_UPSTREAM") == "1", overlay
    assert "HANDOFF_UNSAFE_DISABLE_ACCESS_CHECKS" not in config
    assert float(config["HANDOFF_AUTH_CACHE_TTL_S"]) <= 30
