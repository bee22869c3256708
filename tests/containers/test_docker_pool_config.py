"""The Docker work pool's configuration, without an engine: prefect.docker.yaml holds prefect.yaml's
deployments on the Docker pool with prefect-docker's build/push steps; infra/config/docker.yaml selects
it; the pool template gives containers the stack's URLs, the host network and no secret value; the
flow image's tag follows its sources."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from modelops.config import PROJECT_ROOT, load_config
from modelops.stack import apply_deployments, docker_pool
from modelops.stack import components as comp

LOCAL = PROJECT_ROOT / "prefect.yaml"
DOCKER = PROJECT_ROOT / "prefect.docker.yaml"


def _spec(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _without_pool(deployment: dict) -> dict:
    deployment = copy.deepcopy(deployment)
    deployment.pop("work_pool")
    return deployment


def test_the_docker_file_deploys_the_same_deployments_on_the_docker_pool():
    local, docker = _spec(LOCAL), _spec(DOCKER)
    assert [_without_pool(d) for d in docker["deployments"]] == [
        _without_pool(d) for d in local["deployments"]
    ], (
        "prefect.docker.yaml's deployments must be prefect.yaml's (only work_pool differs): "
        "copy the change to both files"
    )
    for deployment in docker["deployments"]:
        assert deployment["work_pool"]["name"] == "modelops-docker"
        assert deployment["work_pool"]["job_variables"] == {"image": "{{ flow-image.image }}"}


def test_the_docker_file_builds_and_pushes_the_flow_image_and_needs_no_checkout():
    docker = _spec(DOCKER)
    (build,) = docker["build"]
    step = build["prefect_docker.deployments.steps.build_docker_image"]
    assert step["id"] == "flow-image" and step["dockerfile"] == "infra/docker/flow.Dockerfile"
    assert step["network_mode"] == "host" and step["pull"] is False  # pip reaches PyPI; local base kept
    assert set(step["buildargs"]) == {"BASE_IMAGE"}
    (push,) = docker["push"]
    assert (
        push["prefect_docker.deployments.steps.push_docker_image"]["image_name"]
        == "{{ flow-image.image_name }}"
    )
    assert docker["pull"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": "/opt/modelops"}}
    ]
    assert apply_deployments.builds_image(DOCKER) and not apply_deployments.builds_image(LOCAL)
    # the local (process) file builds nothing
    assert _spec(LOCAL)["build"] is None and _spec(LOCAL)["push"] is None


def test_the_docker_config_selects_the_docker_pool_and_its_worker():
    config = load_config("docker", environ={})
    assert config.stack.work_pool_type == "docker" and config.stack.work_pool == "modelops-docker"
    assert comp.prefect_file(config) == DOCKER
    assert config.stack.flow_base_image == "modelops/python-standin:3.11-slim"
    spec = comp.worker(config, None)
    assert spec.argv[spec.argv.index("--type") + 1] == "docker"
    local = load_config("local", environ={})
    assert local.stack.work_pool_type == "process" and comp.prefect_file(local) == LOCAL
    worker = comp.worker(local, None)
    assert worker.argv[worker.argv.index("--type") + 1] == "process"


def test_the_pool_template_points_containers_at_the_stack_without_secret_values():
    config = load_config("docker", environ={"MODELOPS_STACK__MLFLOW_PORT": "5999"})
    environ = {
        "MODELOPS_CONFIG": "docker",
        "MODELOPS_STACK__MLFLOW_PORT": "5999",
        "MODELOPS_SERVING__PORT": "9601",
        "MODELOPS_STACK__HOME": "/somewhere/on/the/host",
        "HOME": "/root",
    }
    template = docker_pool.base_job_template(
        config, "postgresql://app:s3cret@db.example:5432/scoring", "unix:///run/x/docker.sock", environ
    )
    defaults = {key: value.get("default") for key, value in template["variables"]["properties"].items()}
    env = defaults["env"]
    assert defaults["network_mode"] == "host" and defaults["auto_remove"] is True
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5999"
    assert env["MODELOPS_CONFIG"] == "docker" and env["MODELOPS_SERVING__PORT"] == "9601"
    assert env["MODELOPS_STACK__HOME"] == "/home/modelops/stack"  # the image's, not the host's
    assert "HOME" not in env
    # a password never becomes a value in the pool: the worker resolves the Secret block at run time
    assert env["MODELOPS_DATABASE_URL"] == "{{ prefect.blocks.secret.modelops-stack-database-url }}"
    assert "s3cret" not in yaml.safe_dump(template)
    # the docker serving target: the lifecycle in the container reaches the same engine
    assert "/run/x/docker.sock:/var/run/docker.sock" in defaults["volumes"]
    assert env["DOCKER_HOST"] == "unix:///var/run/docker.sock"
    # the job configuration still reads every variable (a deployment's job variables win)
    assert template["job_configuration"]["env"] == "{{ env }}"


def test_a_password_free_dsn_and_a_config_path_reach_the_containers(tmp_path):
    config_file = tmp_path / "team.yaml"
    config_file.write_text("environment: team\nserving: {target: local}\n")
    config = load_config(config_file, environ={})
    template = docker_pool.base_job_template(
        config, "postgresql://postgres@127.0.0.1:5433/modelops", None, {"MODELOPS_CONFIG": str(config_file)}
    )
    defaults = {key: value.get("default") for key, value in template["variables"]["properties"].items()}
    assert defaults["env"]["MODELOPS_DATABASE_URL"] == "postgresql://postgres@127.0.0.1:5433/modelops"
    assert defaults["env"]["MODELOPS_CONFIG"] == str(config_file)
    assert defaults["volumes"] == [f"{config_file}:{config_file}:ro"]  # no engine socket: local target
    assert "DOCKER_HOST" not in defaults["env"]


def test_the_flow_image_tag_names_the_version_and_follows_the_base_image():
    config = load_config("docker", environ={})
    tag = docker_pool.flow_image_tag(config)
    assert tag.startswith(f"{docker_pool.project_version()}-") and tag == docker_pool.flow_image_tag(config)
    other = load_config("docker", environ={"MODELOPS_STACK__FLOW_BASE_IMAGE": "python:3.11-slim"})
    assert docker_pool.flow_image_tag(other) != tag
    variables = docker_pool.deploy_environment(config)
    assert variables["MODELOPS_FLOW_IMAGE"] == "127.0.0.1:5055/modelops/flows"
    assert variables["MODELOPS_FLOW_BASE_IMAGE"] == "modelops/python-standin:3.11-slim"
    assert variables["MODELOPS_PROJECT_ROOT"] == str(PROJECT_ROOT)


def test_the_flow_image_runs_as_a_numeric_non_root_user_and_copies_what_the_tag_hashes():
    text = (PROJECT_ROOT / "infra" / "docker" / "flow.Dockerfile").read_text()
    assert "USER 10001:0" in text
    assert "ARG BASE_IMAGE=python:3.11-slim" in text
    for source in docker_pool.IMAGE_INPUTS:
        if source != "requirements/constraints.txt":
            assert f"COPY {source} " in text, source
    ignored = (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
    for source in docker_pool.IMAGE_INPUTS:
        assert f"!{source}" in ignored, f".dockerignore must let {source} into the build context"


def test_every_deploy_of_a_file_that_builds_gets_the_build_timeout(monkeypatch):
    """Each deploy of prefect.docker.yaml runs the build and push steps again (cache hits, but a
    context upload and a registry round trip): one after the other in the file's order (the first
    one's build fills the cache), each with the build's time."""
    calls: list[tuple[str, float]] = []
    monkeypatch.setattr(
        apply_deployments, "apply_one", lambda _file, name, _pool, timeout_s: calls.append((name, timeout_s))
    )
    outcome = apply_deployments.apply_all(DOCKER, "pool", timeout_s=120, build_timeout_s=1800)
    names = apply_deployments.deployment_names(DOCKER)
    assert outcome.applied == names
    assert [name for name, _ in calls] == names
    assert {timeout for _, timeout in calls} == {1800}

    calls.clear()
    apply_deployments.apply_all(LOCAL, "pool", timeout_s=120, build_timeout_s=1800)
    assert {timeout for _, timeout in calls} == {120}  # nothing to build: the usual time
