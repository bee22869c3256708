"""Reading a secret at the moment of use, from where its :class:`~modelops.config.SecretRef` points.

A reference names an environment variable (``{env: VAR}``) or a Prefect Secret block
(``{prefect_secret: BLOCK}``); the config never holds the value. Never log what this returns.
"""

from __future__ import annotations

import os
from typing import cast

from modelops.config import ConfigError, SecretRef


def resolve_secret(ref: SecretRef | None, *, required: bool = True) -> str | None:
    """The secret's value; None when it is absent and not ``required``, else :class:`ConfigError`."""
    if ref is None:
        if required:
            raise ConfigError("a secret is required here but the config gives no reference")
        return None
    if ref.env:
        return _from_environment(ref.env, required)
    return _from_prefect_block(str(ref.prefect_secret), required)


def _from_environment(variable: str, required: bool) -> str | None:
    value = os.environ.get(variable)
    if value:
        return value
    if required:
        raise ConfigError(f"secret missing: set the environment variable {variable}")
    return None


def _from_prefect_block(block: str, required: bool) -> str | None:
    # Imported here, not at the top: `modelops ship` / `traffic` / `labels` read this module and most
    # often an {env: ...} secret; importing Prefect cost each of them ~1 CPU-second at start, and the
    # client image has no Prefect at all.
    try:
        from prefect.blocks.system import Secret
    except ModuleNotFoundError:
        raise ConfigError(
            f"the secret is the Prefect Secret block '{block}' but Prefect is not installed here: "
            "give an {env: VARIABLE} reference instead"
        ) from None
    try:
        secret = cast(Secret, Secret.load(block))  # a sync call returns the block itself
        value: str = secret.get()
        return value
    except ValueError as exc:
        if required:
            raise ConfigError(
                f"secret missing: create the Prefect Secret block '{block}' "
                f"(prefect block create secret) ({exc})"
            ) from None
        return None
