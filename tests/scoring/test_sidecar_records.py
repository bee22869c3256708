"""Spool line -> COPY row: any text survives the trip into PostgreSQL unchanged (property test)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import psycopg2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelops.integrations.database import apply_migrations
from modelops.integrations.scoring_log import insert_copy_rows
from modelops.scoring.records import copy_row, encode_record

# PostgreSQL text and jsonb cannot hold NUL; everything else must round-trip.
TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=30
)
VALUE = st.one_of(
    st.none(), st.floats(allow_nan=False, allow_infinity=False), TEXT, st.integers(-(10**9), 10**9)
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(model_name=TEXT, model_version=TEXT, features=st.dictionaries(TEXT, VALUE, max_size=6))
def test_any_text_round_trips_through_copy(postgres_url, model_name, model_version, features):
    apply_migrations(postgres_url)
    record = {
        "request_id": str(uuid.uuid4()),
        "scored_at": datetime.now(UTC).isoformat(),
        "model_name": model_name,
        "model_version": model_version,
        "features": features,
        "score": 0.25,
        "decision": 0,
        "latency_ms": None,
        "label": None,
        "period": None,
    }
    connection = psycopg2.connect(postgres_url)
    with connection, connection.cursor() as cursor:
        insert_copy_rows(cursor, copy_row(encode_record(record)))
        cursor.execute(
            "SELECT model_name, model_version, features::text FROM modelops.scoring_log "
            "WHERE request_id = %s",
            (record["request_id"],),
        )
        name, version, stored = cursor.fetchone()
    connection.close()
    assert (name, version) == (model_name, model_version)
    assert _floats(orjson.loads(stored)) == _floats(orjson.loads(orjson.dumps(features)))


def _floats(features: dict) -> dict:
    """jsonb keeps numbers as decimals (4.6e16 comes back as 46000000000000000): compare as floats."""
    return {k: float(v) if isinstance(v, int | float) else v for k, v in features.items()}
