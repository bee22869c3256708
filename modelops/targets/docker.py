"""The ``docker`` serving target: the serving image on one Docker engine, swapped blue/green.

Deploy = push (or pull) the image, start it beside what serves now with ``--network=host`` and
``--rest_api_port=<slot port>``, wait until ``GET /v1/models/<name>`` says the version is
AVAILABLE, smoke-test ``:predict``, and only then stop the old container. On any failure the new
container is removed, :class:`DeployError` is raised and the old one keeps serving.

Stable address: bridge networking and ``-p`` do not work on these machines, so the two slots are a
port pair on the host: ``blue`` = ``serving.port``, ``green`` = ``serving.port + 1`` (or the
``ports`` given). Each deploy takes the slot that is not live, so the URL alternates between the
two; :meth:`DockerTarget.current` reports the live one (read it, or put a load balancer over both
ports). Containers are named ``modelops-<model>-<slot>`` and labelled with model, version, slot
and URL, so the state lives in Docker, not in a file.

TF Serving's gRPC API gets its own pair: ``blue`` = ``serving.grpc_port`` (8500), ``green`` =
``serving.grpc_port - 1`` (8499), passed as the image's ``--port`` flag (the real ``tensorflow/serving``
and the stand-in alike); ``serving.grpc_port`` 0/None, or REST ``ports`` given without ``grpc_ports``,
turn gRPC off (``--port=0``). The live gRPC address is in the rollout's details and the container's
``org.modelops.serving.grpc`` label.

Health: the new container's REST API is polled through :mod:`modelops.serving.rest_client` (the
one TF Serving client) until it reports the version AVAILABLE, then smoke-tested with one record
of missing values (the right version must answer a probability).

The Docker SDK is imported inside the methods that need it: it is a heavy optional dependency, and
importing this module (e.g. through :func:`modelops.targets.factory.make_target` for the ``local`` target)
should not load it.
"""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

from modelops.config import ModelOpsConfig
from modelops.integrations.docker_engine import remove_container
from modelops.integrations.image import ImageError, build_serving_image, docker_client, pull_image, push_image
from modelops.serving.rest_client import HttpTransport, ServingClient, ServingClientError
from modelops.stack.processes import port_owner
from modelops.targets.base import DeployError, Rollout, ServingTarget

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

log = logging.getLogger("modelops.targets.docker")


LABEL_MODEL = "org.modelops.serving.model"
LABEL_VERSION = "org.modelops.serving.version"
LABEL_SLOT = "org.modelops.serving.slot"
LABEL_URL = "org.modelops.serving.url"
LABEL_GRPC = "org.modelops.serving.grpc"
SLOTS = ("blue", "green")


class DockerTarget(ServingTarget):
    name = "docker"

    def __init__(
        self,
        config: ModelOpsConfig,
        *,
        ports: tuple[int, int] | None = None,
        grpc_ports: tuple[int, int] | None = None,
        ready_timeout_s: float | None = None,
        client: docker.DockerClient | None = None,
    ) -> None:
        self.config = config
        self.host = config.serving.host
        self.ports = dict(zip(SLOTS, ports or (config.serving.port, config.serving.port + 1), strict=True))
        grpc_port = config.serving.grpc_port
        if grpc_ports is None and ports is None and grpc_port:
            grpc_ports = (grpc_port, grpc_port - 1)
        self.grpc_ports: dict[str, int | None] = dict(zip(SLOTS, grpc_ports or (None, None), strict=True))
        taken = set(self.ports.values()) & {p for p in self.grpc_ports.values() if p}
        if taken:
            raise ValueError(
                f"docker target: gRPC port(s) {sorted(taken)} are REST slot ports too (REST {self.ports}, "
                f"gRPC {self.grpc_ports}): set serving.grpc_port so that it and grpc_port - 1 differ from "
                "serving.port and serving.port + 1"
            )
        self.ready_timeout_s = ready_timeout_s or config.serving.rollout_timeout_s
        self._client = client

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = docker_client()
        return self._client

    def container_name(self, model_name: str, slot: str) -> str:
        return f"modelops-{model_name}-{slot}"

    def deploy(self, model_name: str, version: str, model_dir: Path, image: str | None = None) -> Rollout:
        from docker.errors import DockerException  # lazy: see the module's docstring

        version = str(version)
        try:
            image = self._publish(model_name, version, model_dir, image)
        except ImageError as exc:
            raise DeployError(f"docker: {exc}") from None
        live = self._live_container(model_name)
        previous_version = live.labels.get(LABEL_VERSION) if live else None
        slot = "green" if live is not None and live.labels.get(LABEL_SLOT) == "blue" else "blue"
        port = self.ports[slot]
        self._remove(self.container_name(model_name, slot))  # a leftover from an interrupted deploy
        if _port_in_use(self.host, port):
            raise DeployError(
                f"docker: port {port} ({slot} slot of {model_name}) is taken by {port_owner(port)}: "
                "free it or set serving.port to a pair of free ports"
            )
        grpc_port = self.grpc_ports[slot]
        if grpc_port and _port_in_use(self.host, grpc_port):
            raise DeployError(
                f"docker: gRPC port {grpc_port} ({slot} slot of {model_name}) is taken by "
                f"{port_owner(grpc_port)}: free it or set serving.grpc_port (the slots use it and the port "
                "below it)"
            )
        grpc_address = f"{self.host}:{grpc_port}" if grpc_port else ""
        url = f"http://{self.host}:{port}"
        log.info("docker: starting %s version %s in the %s slot (%s)", model_name, version, slot, url)
        try:
            container = self.client.containers.run(
                image,
                command=[f"--rest_api_port={port}", f"--port={grpc_port or 0}"],
                name=self.container_name(model_name, slot),
                network_mode="host",
                detach=True,
                environment={"MODELOPS_SERVE_HOST": self.host},
                labels={
                    LABEL_MODEL: model_name,
                    LABEL_VERSION: version,
                    LABEL_SLOT: slot,
                    LABEL_URL: url,
                    LABEL_GRPC: grpc_address,
                },
            )
        except DockerException as exc:
            self._remove(self.container_name(model_name, slot))
            raise DeployError(
                f"docker: could not start {image} for {model_name} version {version}: {exc}"
            ) from None
        try:
            self._wait_available(container, url, model_name, version)
            # One record with every feature missing: NaN / "" go in, the SavedModel's imputation copes.
            score = ServingClient(url).smoke_test(model_name, expected_version=version)[0]
        except (DeployError, ServingClientError) as exc:
            logs = _tail(container)
            self._remove(container.name)
            kept = f"; version {previous_version} keeps serving" if previous_version else ""
            raise DeployError(
                f"docker: {model_name} version {version} failed its health check: {exc}{kept}{logs}"
            ) from None
        container.update(restart_policy={"Name": "unless-stopped"})
        if live is not None:
            log.info("docker: stopping version %s (%s)", previous_version, live.name)
            self._remove(live.name)
        log.info("docker: %s version %s serves at %s (smoke score %.4f)", model_name, version, url, score)
        return Rollout(
            target=self.name,
            model_name=model_name,
            version=version,
            url=url,
            image=image,
            previous_version=previous_version,
            details={"container": container.id, "slot": slot, "port": port, "grpc": grpc_address},
        )

    def current(self, model_name: str) -> Rollout | None:
        live = self._live_container(model_name)
        if live is None:
            return None
        return Rollout(
            target=self.name,
            model_name=model_name,
            version=live.labels.get(LABEL_VERSION, ""),
            url=live.labels.get(LABEL_URL, ""),
            image=(live.image.tags or [live.image.id])[0] if live.image else None,
            details={
                "container": live.id,
                "slot": live.labels.get(LABEL_SLOT),
                "grpc": live.labels.get(LABEL_GRPC, ""),
            },
        )

    def stop(self, model_name: str) -> None:
        for container in self.client.containers.list(
            all=True, filters={"label": f"{LABEL_MODEL}={model_name}"}
        ):
            self._remove(container.name)

    def _publish(self, model_name: str, version: str, model_dir: Path, image: str | None) -> str:
        """Make sure the image is in the registry and on this engine; build it when none is given."""
        from docker.errors import ImageNotFound  # lazy: see the module's docstring

        if image is None:
            image = build_serving_image(
                self.config, model_dir, version, f"v{version}", model_name=model_name, client=self.client
            )
        try:
            self.client.images.get(image)
        except ImageNotFound:
            pull_image(self.config, image, client=self.client)
            return image
        push_image(self.config, image, client=self.client)
        return image

    def _live_container(self, model_name: str) -> Container | None:
        running = self.client.containers.list(
            filters={"label": f"{LABEL_MODEL}={model_name}", "status": "running"}
        )
        # In steady state there is one; during a deploy the older one is still the live one.
        return min(running, key=lambda c: c.attrs.get("Created", ""), default=None)

    def _wait_available(self, container: Container, url: str, model_name: str, version: str) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        serving = ServingClient(HttpTransport(url, timeout=2.0))
        while time.monotonic() < deadline:
            container.reload()
            if container.status not in ("created", "running"):
                raise DeployError(f"the container exited ({container.attrs['State'].get('ExitCode')})")
            try:
                if serving.is_available(model_name, version):
                    return
            except ServingClientError:
                pass  # not listening yet, or the model is still loading
            time.sleep(0.5)
        raise DeployError(
            f"version {version} was not AVAILABLE at {url}/v1/models/{model_name} "
            f"within {self.ready_timeout_s:.0f} s"
        )

    def _remove(self, name: str) -> None:
        remove_container(self.client, name)


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _tail(container: Container, lines: int = 15) -> str:
    try:
        text = container.logs(tail=lines).decode(errors="replace").strip()
    except Exception:  # the container may already be gone
        return ""
    return f"\ncontainer log (last {lines} lines):\n{text}" if text else ""
