"""The model card: a registered version's MLflow description, rendered from what the registry knows.

Everything on the card comes from the version's tags (lineage, evidence, approval) and from the
metrics and parameters of the run that made it, so re-rendering after any tag change keeps the card
current: it is written at registration and rewritten whenever a tag moves (retrain evidence,
approval, rejection, a newer champion).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

HOLDOUT_METRICS = (
    ("ks", "KS"),
    ("auc", "AUC"),
    ("gini", "Gini"),
    ("accuracy", "accuracy"),
    ("log_loss", "log-loss"),
)
STATUS_TEXT = {
    "pending": "awaiting review",
    "approved": "approved",
    "rejected": "rejected",
    "superseded": "superseded",
}


def render_model_card(
    model_name: str,
    version: str,
    tags: Mapping[str, str],
    metrics: Mapping[str, float],
    params: Mapping[str, str],
    aliases: Sequence[str] = (),
) -> str:
    """Markdown for the version's description: status, data, metrics, evidence, approval."""
    status = tags.get("validation_status", "")
    headline = STATUS_TEXT.get(status, status or "not reviewed")
    if aliases:
        headline += f" (alias {', '.join(sorted(aliases))})"
    lines = [f"# {model_name} version {version}", "", f"**Status:** {headline}", ""]
    lines += _data(tags, params) + _metrics(metrics) + _evidence(tags) + _approval(tags)
    return "\n".join(lines).rstrip() + "\n"


def _data(tags: Mapping[str, str], params: Mapping[str, str]) -> list[str]:
    lines = ["## Data", ""]
    source = tags.get("data_source", "")
    digest = tags.get("data_digest", "")
    rows = params.get("n_train")
    lines.append(
        f"- training data: `{source or 'unknown'}`"
        + (f", {rows} rows trained on" if rows else "")
        + (f", hold-out {params['n_holdout']} rows" if params.get("n_holdout") else "")
        + (f" (digest `{digest[:12]}`)" if digest else "")
    )
    if tags.get("reference_artifact"):
        lines.append(
            f"- training reference (label-free drift): `{tags['reference_artifact']}` of the run, "
            f"{tags.get('reference_rows', '?')} rows of the training split with the model's scores"
        )
    if tags.get("retrained_from") or tags.get("trigger"):
        lines.append(
            f"- retrained from version {tags.get('retrained_from') or '–'} ({tags.get('trigger', 'manual')}"
            + (f", KS {tags['trigger_ks']}" if tags.get("trigger_ks") else "")
            + f"): {tags.get('data_window', '')}; {tags.get('n_recent', '?')} recent + "
            f"{tags.get('n_reference', '?')} reference records"
        )
    if params.get("numeric") or params.get("categorical"):
        lines.append(
            f"- features: numeric {params.get('numeric') or '–'}; "
            f"categorical {params.get('categorical') or '–'}; target `{params.get('target', '?')}`"
        )
    return lines + [""]


def _metrics(metrics: Mapping[str, float]) -> list[str]:
    shown = [(label, metrics[key]) for key, label in HOLDOUT_METRICS if key in metrics]
    if not shown:
        return []
    return [
        "## Metrics (hold-out of the training data)",
        "",
        "| " + " | ".join(label for label, _ in shown) + " |",
        "|" + "---|" * len(shown),
        "| " + " | ".join(f"{value:.4f}" for _, value in shown) + " |",
        "",
    ]


def _evidence(tags: Mapping[str, str]) -> list[str]:
    roles = sorted(
        {key.split("_")[2] for key in tags if key.startswith("recent_holdout_") and key.count("_") >= 3}
    )
    lines: list[str] = []
    for role in roles:
        figures = [
            f"{name.upper()} {tags[f'recent_holdout_{role}_{name}']}"
            for name in ("ks", "auc", "n")
            if f"recent_holdout_{role}_{name}" in tags
        ]
        lines.append(f"- recent hold-out, {role}: {', '.join(figures)}")
    if tags.get("evaluation_vs_champion"):
        lines.append(
            "- `mlflow.models.evaluate` against champion version "
            f"{tags.get('evaluation_baseline_version', '?')}: {tags['evaluation_vs_champion']}"
        )
    return (["## Evidence", ""] + lines + [""]) if lines else []


def _approval(tags: Mapping[str, str]) -> list[str]:
    lines: list[str] = []
    if tags.get("approved_by"):
        lines.append(
            f"- approved by {tags['approved_by']}"
            + (f" at {tags['approved_at']}" if tags.get("approved_at") else "")
            + (f": {tags['approval_comment']}" if tags.get("approval_comment") else "")
        )
    if tags.get("deployed_at"):
        where = tags.get("serving_url") or tags.get("target", "")
        lines.append(
            f"- deployed at {tags['deployed_at']} to {tags.get('target', '?')} ({where})"
            + (f", image tag `{tags['image_tag']}`" if tags.get("image_tag") else "")
        )
    if tags.get("rejected_by"):
        lines.append(
            f"- rejected by {tags['rejected_by']} ({tags.get('rejection_reason', '')})"
            + (f" at {tags['rejected_at']}" if tags.get("rejected_at") else "")
            + (f": {tags['rejection_comment']}" if tags.get("rejection_comment") else "")
        )
    if tags.get("superseded_by"):
        lines.append(
            f"- superseded by version {tags['superseded_by']}"
            + (f" at {tags['superseded_at']}" if tags.get("superseded_at") else "")
        )
    if not lines:
        lines.append("- not reviewed yet")
    return ["## Approval", ""] + lines + [""]
