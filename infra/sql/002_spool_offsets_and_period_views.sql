-- Log sidecar bookkeeping and per-period performance views.
-- {schema} is replaced by the validated identifier from the environment config.

-- How far the sidecar has shipped each spool file. Updated in the same transaction as the rows it
-- inserts, so a crash at any moment resumes exactly where the database says it stopped.
CREATE TABLE IF NOT EXISTS {schema}.spool_offsets (
    spool_file   text PRIMARY KEY,         -- file name without its .open/.jsonl suffix: unique per writer
    byte_offset  bigint NOT NULL CHECK (byte_offset >= 0),
    rows_shipped bigint NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- For "latest N labelled records" windows over all versions of a model.
CREATE INDEX IF NOT EXISTS scoring_log_model_scored_at ON {schema}.scoring_log (model_name, scored_at);

-- One row per model version and period: volume, event rate, mean score, decisions.
CREATE OR REPLACE VIEW {schema}.period_performance AS
SELECT model_name, model_version, period,
       count(*)                          AS n,
       count(label)                      AS n_labelled,
       avg(label::double precision)      AS event_rate,
       avg(score)                        AS mean_score,
       avg(decision::double precision)   AS decision_rate,
       min(scored_at)                    AS first_scored_at,
       max(scored_at)                    AS last_scored_at
FROM (SELECT s.model_name, s.model_version, s.period, s.score, s.decision, s.scored_at,
             COALESCE(s.label, l.label) AS label
      FROM {schema}.scoring_log s LEFT JOIN {schema}.labels l USING (request_id)) AS x
GROUP BY model_name, model_version, period;

-- The seed's per-period performance tables (OKDPERF_<period>_H<period>): labelled scores of one
-- period. Unquoted names fold to lower case, so `SELECT * FROM modelops.OKDPERF_1_H1` works.
CREATE OR REPLACE VIEW {schema}.okdperf_1_h1 AS SELECT * FROM {schema}.labelled_scores WHERE period = 1;
CREATE OR REPLACE VIEW {schema}.okdperf_2_h2 AS SELECT * FROM {schema}.labelled_scores WHERE period = 2;
CREATE OR REPLACE VIEW {schema}.okdperf_3_h3 AS SELECT * FROM {schema}.labelled_scores WHERE period = 3;
CREATE OR REPLACE VIEW {schema}.okdperf_4_h4 AS SELECT * FROM {schema}.labelled_scores WHERE period = 4;
