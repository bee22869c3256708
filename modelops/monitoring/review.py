"""The seed's "review and fix model performance error": the error, and the form a person answers."""

from __future__ import annotations

from typing import Literal

from prefect.input import RunInput
from pydantic import Field


class MonitoringError(RuntimeError):
    """The KS check could not be made; the message says what failed and what to fix."""


class MonitoringReview(RunInput):
    """The "review and fix model performance error" form."""

    action: Literal["acknowledge", "rerun"] = Field(
        "acknowledge", description="acknowledge: stop here (fix it first); rerun: run the KS check again now"
    )
    reviewer: str = Field("", description="Your name")
    comment: str = Field("", description="What you found or fixed")


def review_description(model_name: str, error: str) -> str:
    """The Markdown above the review form."""
    return (
        f"## KS check of {model_name} failed\n\n```\n{error}\n```\n\n"
        "Fix the cause (database, MLflow alias, scoring log), then choose **rerun** to check again, or "
        "**acknowledge** to end this run (the next scheduled check runs anyway)."
    )


def describe_error(exc: BaseException) -> str:
    """A MonitoringError's own message; anything else prefixed by its type."""
    return str(exc) if isinstance(exc, MonitoringError) else f"{type(exc).__name__}: {exc}"
