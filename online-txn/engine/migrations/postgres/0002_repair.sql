-- In-doubt repair plans (seed 002): which repair runs for which system group, how often
-- (cron) and how many times per item.
CREATE TABLE repair_plan (
    id           BIGSERIAL PRIMARY KEY,
    system_group TEXT    NOT NULL,
    fix_code     TEXT    NOT NULL,
    max_retries  BIGINT  NOT NULL,
    cron         TEXT    NOT NULL,
    mode         TEXT    NOT NULL,
    valid        BIGINT  NOT NULL,
    importance   TEXT    NOT NULL,
    description  TEXT    NOT NULL,
    created_ms   BIGINT  NOT NULL,
    updated_ms   BIGINT  NOT NULL,
    last_run_ms  BIGINT,
    last_fire_ms BIGINT,
    UNIQUE (system_group, fix_code)
);

-- Every repair attempt and its outcome, one row per item per run. Kept when the plan is
-- deleted (the plan's group and fix code are copied for the audit trail).
CREATE TABLE repair_attempt (
    id           BIGSERIAL PRIMARY KEY,
    plan_id      BIGINT  NOT NULL,
    system_group TEXT    NOT NULL,
    fix_code     TEXT    NOT NULL,
    run_trigger  TEXT    NOT NULL,
    journal_id   BIGINT  NOT NULL,
    reversal_id  BIGINT,
    started_ms   BIGINT  NOT NULL,
    finished_ms  BIGINT  NOT NULL,
    outcome      TEXT    NOT NULL,
    detail       TEXT    NOT NULL
);
CREATE INDEX repair_attempt_item ON repair_attempt (plan_id, journal_id, id);
CREATE INDEX repair_attempt_journal ON repair_attempt (journal_id, id);
