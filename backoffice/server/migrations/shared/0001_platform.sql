-- Platform service: organisations, users, RBAC, menus, dictionary, i18n, tasks, blacklist,
-- login and access logs, files, settings. Times are Unix milliseconds; flags are 0/1.
CREATE TABLE orgs (
    id BIGINT PRIMARY KEY,
    parent_id BIGINT REFERENCES orgs(id),
    code TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    level TEXT NOT NULL,
    path TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX orgs_parent ON orgs (parent_id);
CREATE INDEX orgs_path ON orgs (path);

CREATE TABLE users (
    id BIGINT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    org_id BIGINT NOT NULL REFERENCES orgs(id),
    kind TEXT NOT NULL,
    enabled BIGINT NOT NULL,
    builtin BIGINT NOT NULL DEFAULT 0,
    failed_count BIGINT NOT NULL DEFAULT 0,
    locked_until_ms BIGINT NOT NULL DEFAULT 0,
    lockout_count BIGINT NOT NULL DEFAULT 0,
    lockout_window_ms BIGINT NOT NULL DEFAULT 0,
    frozen BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    last_login_ms BIGINT
);
CREATE INDEX users_org ON users (org_id);

CREATE TABLE roles (
    id BIGINT PRIMARY KEY,
    code TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    domain TEXT NOT NULL,
    data_scope TEXT NOT NULL,
    status TEXT NOT NULL,
    builtin BIGINT NOT NULL DEFAULT 0,
    created_by BIGINT,
    reviewed_by BIGINT,
    review_comment TEXT,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);

CREATE TABLE role_permissions (
    role_id BIGINT NOT NULL REFERENCES roles(id),
    permission TEXT NOT NULL,
    PRIMARY KEY (role_id, permission)
);

-- Mutually exclusive roles, stored in both directions.
CREATE TABLE role_exclusions (
    role_id BIGINT NOT NULL REFERENCES roles(id),
    other_id BIGINT NOT NULL REFERENCES roles(id),
    PRIMARY KEY (role_id, other_id)
);

CREATE TABLE user_roles (
    user_id BIGINT NOT NULL REFERENCES users(id),
    role_id BIGINT NOT NULL REFERENCES roles(id),
    PRIMARY KEY (user_id, role_id)
);
CREATE INDEX user_roles_role ON user_roles (role_id);

CREATE TABLE menus (
    id BIGINT PRIMARY KEY,
    parent_id BIGINT REFERENCES menus(id),
    code TEXT NOT NULL UNIQUE,
    name_key TEXT NOT NULL,
    path TEXT NOT NULL,
    kind TEXT NOT NULL,
    sort BIGINT NOT NULL,
    builtin BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE dict_items (
    id BIGINT PRIMARY KEY,
    dict_type TEXT NOT NULL,
    code TEXT NOT NULL,
    label TEXT NOT NULL,
    sort BIGINT NOT NULL,
    UNIQUE (dict_type, code)
);

CREATE TABLE i18n_entries (
    id BIGINT PRIMARY KEY,
    locale TEXT NOT NULL,
    msg_key TEXT NOT NULL,
    text TEXT NOT NULL,
    UNIQUE (locale, msg_key)
);

CREATE TABLE tasks (
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    cron TEXT NOT NULL,
    action TEXT NOT NULL,
    enabled BIGINT NOT NULL,
    last_run_ms BIGINT,
    next_run_ms BIGINT,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);

CREATE TABLE task_runs (
    id BIGINT PRIMARY KEY,
    task_id BIGINT NOT NULL,
    started_ms BIGINT NOT NULL,
    finished_ms BIGINT,
    outcome TEXT NOT NULL,
    message TEXT NOT NULL,
    trigger_kind TEXT NOT NULL
);
CREATE INDEX task_runs_task ON task_runs (task_id, started_ms);

CREATE TABLE blacklist (
    id BIGINT PRIMARY KEY,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    UNIQUE (kind, value)
);

CREATE TABLE login_log (
    id BIGINT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    username TEXT NOT NULL,
    user_id BIGINT,
    address TEXT NOT NULL,
    outcome TEXT NOT NULL
);
CREATE INDEX login_log_at ON login_log (at_ms);
CREATE INDEX login_log_user ON login_log (username, at_ms);

CREATE TABLE access_log (
    id BIGINT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    user_id BIGINT,
    username TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    permission TEXT NOT NULL,
    allowed BIGINT NOT NULL
);
CREATE INDEX access_log_at ON access_log (at_ms);
CREATE INDEX access_log_user ON access_log (username, at_ms);

CREATE TABLE files (
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    object_key TEXT NOT NULL,
    created_by BIGINT,
    created_ms BIGINT NOT NULL
);

CREATE TABLE settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
