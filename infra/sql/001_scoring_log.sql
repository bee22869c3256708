-- Scoring log, labels, KS-check results and approvals audit.
-- Applied by modelops.tasks.scoring_log.apply_migrations (idempotent; tracked in schema_migrations).
-- {schema} is replaced by the validated identifier from the environment config.

CREATE TABLE IF NOT EXISTS {schema}.scoring_log (
    request_id     uuid PRIMARY KEY,
    scored_at      timestamptz NOT NULL,
    model_name     text NOT NULL,
    model_version  text NOT NULL,
    features       jsonb NOT NULL,
    score          double precision NOT NULL,
    decision       smallint NOT NULL,
    latency_ms     real,
    label          smallint CHECK (label IN (0, 1)),
    period         integer,
    shipped_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS scoring_log_model_time
    ON {schema}.scoring_log (model_name, model_version, scored_at);

-- Labels that arrive after scoring (`modelops labels`), keyed by request id.
CREATE TABLE IF NOT EXISTS {schema}.labels (
    request_id   uuid PRIMARY KEY,
    label        smallint NOT NULL CHECK (label IN (0, 1)),
    labelled_at  timestamptz NOT NULL DEFAULT now()
);

-- The scored records whose true outcome is known, whichever way the label came.
CREATE OR REPLACE VIEW {schema}.labelled_scores AS
SELECT s.request_id, s.scored_at, s.model_name, s.model_version, s.score, s.period,
       COALESCE(s.label, l.label) AS label
FROM {schema}.scoring_log s
LEFT JOIN {schema}.labels l USING (request_id)
WHERE COALESCE(s.label, l.label) IS NOT NULL;

CREATE TABLE IF NOT EXISTS {schema}.ks_checks (
    id             bigserial PRIMARY KEY,
    checked_at     timestamptz NOT NULL DEFAULT now(),
    model_name     text NOT NULL,
    model_version  text NOT NULL,
    status         text NOT NULL CHECK (status IN ('ok', 'degraded', 'insufficient_data')),
    ks             double precision,
    auc            double precision,
    threshold      double precision NOT NULL,
    n              integer NOT NULL,
    n_events       integer NOT NULL,
    window_start   timestamptz,
    window_end     timestamptz,
    details        jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS ks_checks_model_time ON {schema}.ks_checks (model_name, checked_at);

CREATE TABLE IF NOT EXISTS {schema}.approvals (
    id             bigserial PRIMARY KEY,
    decided_at     timestamptz NOT NULL DEFAULT now(),
    model_name     text NOT NULL,
    model_version  text NOT NULL,
    approved       boolean NOT NULL,
    reviewer       text NOT NULL,
    image_tag      text,
    comment        text,
    evidence       jsonb NOT NULL DEFAULT '{}'::jsonb,
    flow_run_id    text
);
