"""docker-compose.yml and the Dockerfiles, read as files: valid against the Compose specification, every
path they name exists, the build arguments' defaults agree. tests/test_compose.py runs them on a real
Docker engine."""
from __future__ import annotations

import re

import compose_spec
import pytest
import yaml

from tests.clips import ROOT

COMPOSE = ROOT / "docker-compose.yml"


def interpolated(text: str) -> str:
    """The file as Compose reads it with none of its variables set: `${VAR:-default}` is the default."""
    return re.sub(r"\$\{\w+(?::-([^}]*))?\}", lambda m: m[1] or "", text)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_valid_against_the_compose_specification():
    # the parser is strict: unknown keys and wrong types are errors
    # YAML merge keys resolved (the spec's parser does not), variables at their defaults
    parsed = compose_spec.PyCompose.from_yaml(yaml.safe_dump(yaml.safe_load(interpolated(COMPOSE.read_text()))))
    parsed.validate()
    assert set(parsed.service_names()) == {"redis", "api", "worker", "worker-gpu", "postgres", "minio", "minio-bucket",
                                           "etcd", "milvus", "cluster-api-1", "cluster-api-2", "cluster-worker"}
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
    assert api["ports"] == ["${HAPVR_PUBLISH_PORT:-8000}:8000"]
    for name in ("api", "worker"):
        # the password (empty: none) reaches every client of Redis
        assert compose["services"][name]["environment"]["HAPVR_REDIS_URL"] == \
            "redis://:${HAPVR_REDIS_PASSWORD:-}@redis:6379/0"
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
        if line.startswith("ARG BASE_IMAGE="):
            assert ":" in line and ":latest" not in line, "base images are pinned"
    assert "torch==2.13.0" in text
    assert re.search(r"^USER (?!root)", text, re.M)
    assert "HEALTHCHECK" in text


def test_api_doc_matches_the_openapi_schema():
    from service.apidoc import DOC, current

    assert DOC.read_text() == current(), "docs/API.md is stale: run `python -m service.apidoc`"


def _arg_defaults(dockerfile: str) -> dict[str, str]:
    text = (ROOT / dockerfile).read_text()
    return {m[0]: m[1].strip('"') for m in re.findall(r"^ARG (\w+)=(.*)$", text, re.M)}


@pytest.mark.parametrize(("service", "dockerfile"), [("api", "docker/Dockerfile"), ("worker", "docker/Dockerfile"),
                                                     ("worker-gpu", "docker/Dockerfile.cuda")])
def test_build_arguments_default_to_the_dockerfiles_own(compose, service, dockerfile):
    """The compose file passes BASE_IMAGE and TORCH_PIP_ARGS from the environment; unset, they must be
    the Dockerfile's own defaults (one public default, not two that drift apart)."""
    defaults = _arg_defaults(dockerfile)
    assert set(defaults) == {"BASE_IMAGE", "TORCH_PIP_ARGS"}
    args = compose["services"][service]["build"]["args"]
    for name, value in args.items():
        m = re.fullmatch(r"\$\{(HAPVR_\w+):-(.*)\}", value)
        assert m, f"{service}: {name} comes from an HAPVR_ variable with a default"
        assert m[2] == defaults[name], f"{service}: {name} default {m[2]!r} != {dockerfile}'s {defaults[name]!r}"
    text = (ROOT / dockerfile).read_text()
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.M)
    assert "pip install ${TORCH_PIP_ARGS} torch==2.13.0" in text


def test_compose_1_29_accepts_the_file_and_redis_is_configured_for_the_network(compose):
    assert "name" not in compose, "Compose 1.29 rejects a top-level name:"
    conf = (ROOT / "docker" / "redis.conf").read_text()
    assert re.search(r"^protected-mode no$", conf, re.M) and re.search(r"^bind \* -::\*$", conf, re.M)
    redis = compose["services"]["redis"]
    assert "ports" not in redis, "Redis is reachable from the compose network only"
    assert "--requirepass" in " ".join(redis["command"])
    assert redis["environment"]["REDIS_PASSWORD"] == "${HAPVR_REDIS_PASSWORD:-}"


def test_the_build_context_leaves_out_what_no_image_needs():
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", "hapvr-data*", "bench/out", "tests", "docs"):
        assert entry in ignored


def test_the_cluster_profile_shares_no_disk_and_names_only_its_own_engines(compose):
    """In the cluster profile no hapvr container mounts a volume (each has a private tmpfs data folder), and
    the catalog, feature store, vector index and queue they are configured with are services of the file."""
    services = compose["services"]
    hapvr = {n: s for n, s in services.items() if n.startswith("cluster-")}
    assert set(hapvr) == {"cluster-api-1", "cluster-api-2", "cluster-worker"}
    for name, svc in hapvr.items():
        assert svc["profiles"] == ["cluster"] and "volumes" not in svc and svc["tmpfs"] == ["/data"], name
        env = svc["environment"]
        hosts = {re.search(r"@?([\w-]+):\d+", env[key])[1] for key in
                 ("HAPVR_CATALOG", "HAPVR_S3_ENDPOINT", "HAPVR_VECTORS", "HAPVR_REDIS_URL")}
        assert hosts == {"postgres", "minio", "milvus", "redis"} and hosts <= set(services), (name, hosts)
        assert env["HAPVR_FEATURES"].startswith("s3://") and env["HAPVR_VECTORS"].startswith("milvus://")
        assert set(svc["depends_on"]) == {"redis", "postgres", "minio-bucket", "milvus"}
    assert services["cluster-worker"]["deploy"]["replicas"] == 2
    ports = {svc["ports"][0].split(":")[-2] for n, svc in hapvr.items() if "ports" in svc}
    assert len(ports) == 2  # two API processes, each on its own host port
    assert all(services[n]["profiles"] == ["cluster"] for n in ("postgres", "minio", "minio-bucket", "etcd", "milvus"))

