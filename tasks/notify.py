"""Microsoft Teams and e-mail: tell people what happened at a stage (else the flow log)."""

from __future__ import annotations

import threading

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
    return channels.notify(
        message.stage, message.title, message.facts, settings, teams=teams, email=email, link=message.link
    )


def notify_later(
    delay_s: float, message: Message, settings: NotificationSettings, teams: bool = True, email: bool = True
) -> threading.Timer:
    """Send ``message`` in ``delay_s`` seconds unless the returned timer is cancelled first.

    Not a task: it returns at once and the message goes out from a timer thread while the flow
    waits (a paused approval); its log lines land in the flow run's log.
    """
    return channels.notify_later(
        delay_s, message.stage, message.title, message.facts, settings, teams, email, message.link
    )
