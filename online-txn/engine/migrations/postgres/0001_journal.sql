-- The transaction journal: one row per financial request, written before it is sent.
CREATE TABLE txn_journal (
    id              BIGSERIAL PRIMARY KEY,
    terminal_id     TEXT    NOT NULL,
    stan            TEXT    NOT NULL,
    txn_date        TEXT    NOT NULL,
    mti             TEXT    NOT NULL,
    processing_code TEXT    NOT NULL,
    amount_minor    BIGINT  NOT NULL,
    currency        TEXT    NOT NULL,
    pan_masked      TEXT    NOT NULL,
    request_digest  TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    response_code   TEXT,
    rrn             TEXT,
    auth_code       TEXT,
    response_json   TEXT,
    created_ms      BIGINT  NOT NULL,
    updated_ms      BIGINT  NOT NULL,
    UNIQUE (terminal_id, stan, txn_date)
);
CREATE INDEX txn_journal_state ON txn_journal (state, updated_ms);

-- Reversals to deliver to the host, durable across restarts (store and forward).
CREATE TABLE reversal_queue (
    id              BIGSERIAL PRIMARY KEY,
    journal_id      BIGINT  NOT NULL UNIQUE REFERENCES txn_journal (id),
    reason          TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    attempts        BIGINT  NOT NULL,
    next_attempt_ms BIGINT  NOT NULL,
    expires_ms      BIGINT  NOT NULL,
    last_result     TEXT,
    created_ms      BIGINT  NOT NULL,
    updated_ms      BIGINT  NOT NULL
);
CREATE INDEX reversal_queue_due ON reversal_queue (state, next_attempt_ms);
