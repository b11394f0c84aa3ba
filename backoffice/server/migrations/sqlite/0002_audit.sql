-- Audit log (seed 003). SQLite keeps one table; retention deletes old rows.
CREATE TABLE audit_log (
    id BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    user_id BIGINT,
    username TEXT NOT NULL,
    session_id TEXT,
    trace_id TEXT NOT NULL,
    txn_group_id TEXT NOT NULL,
    address TEXT NOT NULL,
    action TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id TEXT,
    before_json TEXT,
    after_json TEXT,
    PRIMARY KEY (at_ms, id)
);
CREATE INDEX audit_user_at ON audit_log (user_id, at_ms);
CREATE INDEX audit_username_at ON audit_log (username, at_ms);
CREATE INDEX audit_session_at ON audit_log (session_id, at_ms);
CREATE INDEX audit_group_at ON audit_log (txn_group_id, at_ms);
