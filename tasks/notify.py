"""Microsoft Teams and e-mail: tell people what happened at a stage (else the flow log)."""

from __future__ import annotations

from modelops.config import NotificationSettings
from modelops.integrations import notify as channels
from modelops.messages import Message
from tasks.base import task


@task("notify")
def notify(
    message: Message, settings: NotificationSettings, teams: bool = True, email: bool = True
) -> dict[str, channels.ChannelStatus]:
    """What each channel did ("sent", "failed", "off"); a failing channel never fails the flow.

    ``teams`` / ``email`` are the run's switches (the seed's start-form check boxes).
    """
    return channels.notify(message.stage, message.title, message.facts, settings, teams=teams, email=email)
