"""`modelops demo`'s optional extra ks-check schedule (``monitoring.demo_interval_s``) on a real Prefect
server: added for the demo's length and removed after it; off by default, when a schedule left by a
killed demo is removed too."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prefect.client.schemas.schedules import IntervalSchedule

from modelops.cli.demo_loop import DEMO_SCHEDULE_SLUG, short_ks_schedule
from modelops.config import ModelOpsConfig, load_config
from modelops.integrations.prefect_client import prefect_client

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def deployment_id():
    with prefect_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("ks-check")
        deployment = client.create_deployment(flow_id=flow_id, name="ks-check")
        yield deployment
        client.delete_deployment(deployment)


def _config(interval_s: int) -> ModelOpsConfig:
    config = load_config()
    return config.model_copy(
        update={"monitoring": config.monitoring.model_copy(update={"demo_interval_s": interval_s})}
    )


def _intervals(deployment_id) -> dict[str | None, float]:
    with prefect_client(sync_client=True) as client:
        schedules = client.read_deployment_schedules(deployment_id)
    return {
        s.slug: s.schedule.interval.total_seconds()
        for s in schedules
        if isinstance(s.schedule, IntervalSchedule)
    }


def test_a_positive_interval_schedules_ks_check_for_the_demo_only(deployment_id):
    said: list[str] = []
    with short_ks_schedule(_config(7), said.append):
        assert _intervals(deployment_id) == {DEMO_SCHEDULE_SLUG: 7.0}
    assert _intervals(deployment_id) == {}
    assert "demo schedule every 7 s" in said[0] and "removed" in said[-1]


def test_by_default_no_schedule_is_added_and_one_left_by_a_killed_demo_is_removed(deployment_id):
    assert load_config().monitoring.demo_interval_s == 0
    with prefect_client(sync_client=True) as client:
        client.create_deployment_schedules(
            deployment_id, [(IntervalSchedule(interval=timedelta(seconds=5)), True)], slug=DEMO_SCHEDULE_SLUG
        )
    said: list[str] = []
    with short_ks_schedule(load_config(), said.append):
        assert _intervals(deployment_id) == {}
    assert said == []
