"""Which port each model is served on by the ``local`` target: one URL per model, kept across restarts.

The allocation is sticky, in ``<serving home>/ports.json`` (``{"hmeq-risk": 8501, "hmeq-real": 8502}``):
the first model gets ``serving.port``, each later one the next port that is neither allocated nor
in use. A model keeps its port for good, so its URL survives redeploys, ``down``/``up`` and
crashes. A per-model ``serving_port`` in the config (if the config has a per-model section) wins.

This module is light (no psutil, Prefect or MLflow): ``modelops traffic`` reads it in the client
image to find a model's URL.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelops.config import ModelOpsConfig

PORTS_FILE = "ports.json"
_LAST_PORT = 65535


def serving_home(config: ModelOpsConfig) -> Path:
    """Where the local target keeps served copies, state, logs and the port map."""
    return (config.stack_home / "serving").resolve()


def configured_port(config: ModelOpsConfig, model_name: str) -> int | None:
    """A per-model ``serving_port`` from the config's per-model section, when it has one."""
    models: Any = getattr(config, "models", None)
    entry: Any = models.get(model_name) if isinstance(models, Mapping) else None
    port = entry.get("serving_port") if isinstance(entry, Mapping) else getattr(entry, "serving_port", None)
    return int(port) if port else None


class PortMap:
    """The sticky model -> port map of one serving home."""

    def __init__(self, home: Path, host: str, first_port: int) -> None:
        self.path = home / PORTS_FILE
        self.host = host
        self.first_port = first_port

    def read(self) -> dict[str, int]:
        try:
            raw = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return {str(k): int(v) for k, v in raw.items()} if isinstance(raw, dict) else {}

    def lookup(self, model_name: str) -> int | None:
        return self.read().get(model_name)

    def port_for(self, model_name: str, override: int | None = None) -> int:
        """The model's port: its allocation, else ``override``, else a new one (recorded)."""
        with self._locked():
            ports = self.read()
            if override is not None and ports.get(model_name) != override:
                ports[model_name] = override
            elif model_name not in ports:
                ports[model_name] = self._next_free(set(ports.values()))
            else:
                return ports[model_name]
            self._write(ports)
            return ports[model_name]

    def _next_free(self, taken: set[int]) -> int:
        if not taken and self.first_port not in taken:
            return self.first_port  # the first model keeps the configured URL, even if it is busy now
        for port in range(self.first_port, _LAST_PORT + 1):
            if port not in taken and not _in_use(self.host, port):
                return port
        raise OSError(f"no free port at or above {self.first_port} on {self.host} for another model")

    def _write(self, ports: dict[str, int]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(ports, indent=2, sort_keys=True))
        os.replace(tmp, self.path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.with_suffix(".lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield


def port_map(config: ModelOpsConfig, home: Path | None = None) -> PortMap:
    return PortMap(home or serving_home(config), config.serving.host, config.serving.port)


def serving_port_for(config: ModelOpsConfig, model_name: str, home: Path | None = None) -> int:
    """The port ``model_name`` is (or will be) served on locally; allocates one on first use."""
    return port_map(config, home).port_for(model_name, configured_port(config, model_name))


def local_serving_url(config: ModelOpsConfig, model_name: str) -> str | None:
    """The model's local URL when it has a port (configured or allocated); never allocates."""
    port = configured_port(config, model_name) or port_map(config).lookup(model_name)
    return f"http://{config.serving.host}:{port}" if port else None


def _in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False
