"""docker-compose.yml and the Dockerfiles: valid against the Compose specification, and everything they
name exists in the repository (there is no Docker engine here to run them)."""
from __future__ import annotations

import re

import compose_spec
import pytest
import yaml

from tests.clips import ROOT

COMPOSE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_valid_against_the_compose_specification():
    # the parser is strict: unknown keys and wrong types are errors
    parsed = compose_spec.PyCompose.from_yaml(COMPOSE.read_text())
    parsed.validate()
    assert set(parsed.service_names()) == {"redis", "api", "worker", "worker-gpu"}
    with pytest.raises(ValueError):
        compose_spec.PyCompose.from_yaml("services:\n  a:\n    imagee: x\n")


def test_references_resolve(compose):
    services = compose["services"]
    volumes = set(compose.get("volumes", {}))
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
        for mount in svc.get("volumes", []):
            src = mount.split(":")[0]
            if src.startswith("."):
                assert (ROOT / src).exists(), f"{name} mounts missing {src}"
            else:
                assert src in volumes, f"{name} mounts undeclared volume {src}"
        build = svc.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file()
        command = svc.get("command", [])
        if command[:2] == ["python", "-m"]:
            module = command[2].replace(".", "/")
            assert (ROOT / f"{module}.py").is_file() or (ROOT / module / "__main__.py").is_file(), command


def test_redis_is_durable_and_gpu_worker_reserves_a_gpu(compose):
    conf = (ROOT / "docker" / "redis.conf").read_text()
    assert re.search(r"^appendonly yes", conf, re.M)
    gpu = compose["services"]["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    api = compose["services"]["api"]
    assert "8000:8000" in api["ports"]
    for name in ("api", "worker"):
        assert compose["services"][name]["environment"]["HAPVR_REDIS_URL"].startswith("redis://redis:")
    # every process that opens the store takes the encoder precision from one variable (a store keeps one)
    for name in ("api", "worker", "worker-gpu"):
        assert compose["services"][name]["environment"]["HAPVR_ENCODER_PRECISION"].startswith("${HAPVR_ENCODER_PRECISION:-")


@pytest.mark.parametrize("dockerfile", ["docker/Dockerfile", "docker/Dockerfile.cuda"])
def test_dockerfiles_copy_existing_paths_pin_versions_and_drop_root(dockerfile):
    text = (ROOT / dockerfile).read_text()
    for line in text.splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"{dockerfile} copies missing {src}"
        if line.startswith("FROM "):
            assert ":" in line and ":latest" not in line, "base images are pinned"
    assert "torch==2.13.0" in text
    assert re.search(r"^USER (?!root)", text, re.M)
    assert "HEALTHCHECK" in text


def test_api_doc_matches_the_openapi_schema():
    from service.apidoc import DOC, current

    assert DOC.read_text() == current(), "docs/API.md is stale: run `python -m service.apidoc`"
