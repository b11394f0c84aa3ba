//! The OpenAPI 3.1 document at `/api/v2/openapi.json`, generated from the endpoint table below.
//! Every answer is the envelope; lists are pages (docs/backoffice.md). The integration tests
//! check that each endpoint listed here is routed.

use serde_json::{Map, Value, json};

/// One endpoint: method, path, permission (empty: none or session only), summary.
pub const ENDPOINTS: &[(&str, &str, &str, &str)] = &[
    (
        "post",
        "/api/v2/auth/login",
        "",
        "Sign in; returns a bearer token and the session",
    ),
    ("post", "/api/v2/auth/logout", "", "End the session"),
    (
        "get",
        "/api/v2/auth/session",
        "",
        "The current session: user, permissions, menus",
    ),
    (
        "post",
        "/api/v2/auth/password",
        "",
        "Change one's own password",
    ),
    (
        "get",
        "/api/v2/i18n/{locale}",
        "",
        "Translations overriding the console's bundles",
    ),
    (
        "get",
        "/api/v2/platform/orgs",
        "platform:org:query",
        "Organisation tree within the data scope",
    ),
    (
        "post",
        "/api/v2/platform/orgs",
        "platform:org:edit",
        "Create an organisation",
    ),
    (
        "put",
        "/api/v2/platform/orgs/{id}",
        "platform:org:edit",
        "Rename an organisation",
    ),
    (
        "delete",
        "/api/v2/platform/orgs/{id}",
        "platform:org:delete",
        "Delete an empty organisation",
    ),
    (
        "get",
        "/api/v2/platform/users",
        "platform:user:query",
        "Users (paged)",
    ),
    (
        "post",
        "/api/v2/platform/users",
        "platform:user:edit",
        "Create a user",
    ),
    (
        "put",
        "/api/v2/platform/users/{id}",
        "platform:user:edit",
        "Change a user",
    ),
    (
        "delete",
        "/api/v2/platform/users/{id}",
        "platform:user:delete",
        "Delete a user",
    ),
    (
        "post",
        "/api/v2/platform/users/{id}/unlock",
        "platform:user:unlock",
        "End a lockout or freeze",
    ),
    (
        "post",
        "/api/v2/platform/users/{id}/password",
        "platform:user:edit",
        "Reset a password",
    ),
    (
        "get",
        "/api/v2/platform/roles",
        "platform:role:query",
        "Roles (paged)",
    ),
    (
        "post",
        "/api/v2/platform/roles",
        "platform:role:edit",
        "Create a role (pending review)",
    ),
    (
        "put",
        "/api/v2/platform/roles/{id}",
        "platform:role:edit",
        "Change a role (back to pending)",
    ),
    (
        "delete",
        "/api/v2/platform/roles/{id}",
        "platform:role:delete",
        "Delete an unused role",
    ),
    (
        "post",
        "/api/v2/platform/roles/{id}/review",
        "platform:role:review",
        "Approve or reject a role",
    ),
    (
        "get",
        "/api/v2/platform/permissions",
        "platform:role:query",
        "The permission catalogue",
    ),
    (
        "get",
        "/api/v2/platform/menus",
        "platform:menu:query",
        "The whole menu tree",
    ),
    (
        "post",
        "/api/v2/platform/menus",
        "platform:menu:edit",
        "Create a menu entry",
    ),
    (
        "put",
        "/api/v2/platform/menus/{id}",
        "platform:menu:edit",
        "Change a menu entry",
    ),
    (
        "delete",
        "/api/v2/platform/menus/{id}",
        "platform:menu:delete",
        "Delete a custom menu entry",
    ),
    (
        "get",
        "/api/v2/platform/dicts",
        "platform:dict:query",
        "Dictionary items (paged)",
    ),
    (
        "post",
        "/api/v2/platform/dicts",
        "platform:dict:edit",
        "Create a dictionary item",
    ),
    (
        "put",
        "/api/v2/platform/dicts/{id}",
        "platform:dict:edit",
        "Change a dictionary item",
    ),
    (
        "delete",
        "/api/v2/platform/dicts/{id}",
        "platform:dict:delete",
        "Delete a dictionary item",
    ),
    (
        "get",
        "/api/v2/platform/i18n",
        "platform:i18n:query",
        "I18n entries (paged)",
    ),
    (
        "post",
        "/api/v2/platform/i18n",
        "platform:i18n:edit",
        "Create an i18n entry",
    ),
    (
        "put",
        "/api/v2/platform/i18n/{id}",
        "platform:i18n:edit",
        "Change an i18n entry",
    ),
    (
        "delete",
        "/api/v2/platform/i18n/{id}",
        "platform:i18n:delete",
        "Delete an i18n entry",
    ),
    (
        "get",
        "/api/v2/platform/tasks",
        "platform:task:query",
        "Scheduled tasks (paged)",
    ),
    (
        "post",
        "/api/v2/platform/tasks",
        "platform:task:edit",
        "Create a scheduled task",
    ),
    (
        "put",
        "/api/v2/platform/tasks/{id}",
        "platform:task:edit",
        "Change a scheduled task",
    ),
    (
        "delete",
        "/api/v2/platform/tasks/{id}",
        "platform:task:delete",
        "Delete a scheduled task",
    ),
    (
        "post",
        "/api/v2/platform/tasks/{id}/run",
        "platform:task:run",
        "Run a task now",
    ),
    (
        "get",
        "/api/v2/platform/tasks/{id}/runs",
        "platform:task:query",
        "A task's runs (paged)",
    ),
    (
        "get",
        "/api/v2/platform/task-actions",
        "platform:task:query",
        "Actions a task can run",
    ),
    (
        "get",
        "/api/v2/platform/blacklist",
        "platform:blacklist:query",
        "Blacklist (paged)",
    ),
    (
        "post",
        "/api/v2/platform/blacklist",
        "platform:blacklist:edit",
        "Blacklist a user or address",
    ),
    (
        "delete",
        "/api/v2/platform/blacklist/{id}",
        "platform:blacklist:delete",
        "Remove a blacklist entry",
    ),
    (
        "get",
        "/api/v2/platform/login-log",
        "platform:loginlog:query",
        "Login log (paged)",
    ),
    (
        "get",
        "/api/v2/platform/access-log",
        "platform:accesslog:query",
        "Access-authorisation log (paged)",
    ),
    (
        "get",
        "/api/v2/audit/logs",
        "audit:log:query",
        "Audit log inquiry (paged)",
    ),
    (
        "get",
        "/api/v2/files",
        "files:file:query",
        "Uploaded files (paged)",
    ),
    (
        "post",
        "/api/v2/files",
        "files:file:upload",
        "Upload a file (multipart field `file`)",
    ),
    (
        "get",
        "/api/v2/files/{id}",
        "files:file:query",
        "Download a file (attachment)",
    ),
    (
        "delete",
        "/api/v2/files/{id}",
        "files:file:delete",
        "Delete a file",
    ),
];

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for (method, path, permission, summary) in ENDPOINTS {
        let public = path.ends_with("/login") || path.starts_with("/api/v2/i18n/");
        let mut op = json!({
            "summary": summary,
            "tags": [path.split('/').nth(3).unwrap_or("api")],
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}}},
                "default": {"description": "Error (see code)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}}}
            }
        });
        if !public {
            op["security"] = json!([{"bearer": []}]);
        }
        if !permission.is_empty() {
            op["x-permission"] = json!(permission);
        }
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !params.is_empty() {
            op["parameters"] = json!(params);
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "OpenTeller backoffice API", "version": "2"},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Envelope": {
                    "type": "object",
                    "required": ["code", "message", "data"],
                    "properties": {
                        "code": {"type": "string", "description": "OK or a stable error code"},
                        "message": {"type": "string"},
                        "data": {}
                    }
                },
                "Page": {
                    "type": "object",
                    "properties": {
                        "pageNo": {"type": "integer"}, "pageSize": {"type": "integer"},
                        "totalCount": {"type": "integer"}, "totalPages": {"type": "integer"},
                        "rows": {"type": "array"}
                    }
                }
            }
        }
    })
}
