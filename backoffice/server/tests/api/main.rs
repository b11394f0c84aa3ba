//! Integration tests of the backoffice: the real binary over HTTP, each repository test run
//! against SQLite and against PostgreSQL.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

/// Runs each listed test against SQLite and against PostgreSQL.
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() { super::$name(super::DbKind::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() { super::$name(super::DbKind::Postgres).await })*
        }
    };
}

on_both_databases!(
    rbac_review_and_retirement_of_the_initial_admin,
    lockout_then_freeze_then_unlock,
    bad_input_is_refused_and_changes_nothing,
    injection_and_script_payloads_are_stored_as_plain_text,
    uploads_are_checked_and_served_as_attachments,
    data_scope_and_exclusive_roles,
    blacklist_and_idle_sessions,
    scheduled_tasks_run_on_schedule_and_on_demand,
);

async fn audit_actions(c: &Client, query: &str) -> Vec<String> {
    let page = c
        .ok(
            "GET",
            &format!("/api/v2/audit/logs?pageSize=200&{query}"),
            Value::Null,
        )
        .await;
    page["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap().to_owned())
        .collect()
}

async fn rbac_review_and_retirement_of_the_initial_admin(kind: DbKind) {
    let db = TestDb::create(kind, "rbac").await;
    let bo = Backoffice::start(&db, "", &[]).await;
    let anon = bo.anonymous();
    assert_error(
        &anon.get("/api/v2/platform/users").await,
        401,
        "UNAUTHENTICATED",
    );
    assert_error(
        &anon
            .post(
                "/api/v2/auth/login",
                json!({"username": "sysadmin", "password": "wrong"}),
            )
            .await,
        401,
        "BAD_CREDENTIALS",
    );
    let mut admin = bo.admin().await;
    let ho = head_office(&admin).await;

    admin.group("grp-org");
    let branch = admin
        .ok(
            "POST",
            "/api/v2/platform/orgs",
            json!({"parentId": ho, "code": "BR1", "name": "Branch 1", "level": "branch"}),
        )
        .await;
    assert_eq!(branch["level"], "branch");
    admin.group("grp-role");
    let auditor = admin
        .ok(
            "POST",
            "/api/v2/platform/roles",
            json!({
                "code": "auditor", "name": "Auditor", "domain": "technical", "dataScope": "all",
                "permissions": ["audit:log:query", "platform:loginlog:query"]
            }),
        )
        .await;
    assert_eq!(auditor["status"], "pending");
    let auditor_id = auditor["id"].as_str().unwrap().to_owned();
    // A technical role cannot hold business permissions.
    assert_error(
        &admin
            .post("/api/v2/platform/roles", json!({"code": "mixed", "name": "M", "dataScope": "all", "permissions": ["platform:dict:edit"]}))
            .await,
        409,
        "DOMAIN_MISMATCH",
    );
    // Its author cannot review it.
    assert_error(
        &admin
            .post(
                &format!("/api/v2/platform/roles/{auditor_id}/review"),
                json!({"approve": true}),
            )
            .await,
        409,
        "FAILED_PRECONDITION",
    );
    let sysadmin_role = role_id(&admin, "sysadmin").await;
    admin.group("grp-secadmin");
    admin
        .ok(
            "POST",
            "/api/v2/platform/users",
            json!({
                "username": "secadmin", "displayName": "Security admin", "password": PASSWORD,
                "orgId": ho, "roleIds": [sysadmin_role]
            }),
        )
        .await;
    assert_error(
        &admin
            .post("/api/v2/platform/users", json!({"username": "weak", "displayName": "W", "password": "password", "orgId": ho}))
            .await,
        400,
        "WEAK_PASSWORD",
    );

    // The first sign-in of a bank administrator retires the initial one for good.
    let mut sec = bo.login("secadmin", PASSWORD).await;
    assert_error(
        &admin.get("/api/v2/platform/users").await,
        401,
        "UNAUTHENTICATED",
    );
    assert_error(
        &anon
            .post(
                "/api/v2/auth/login",
                json!({"username": "sysadmin", "password": INIT_PASSWORD}),
            )
            .await,
        403,
        "ACCOUNT_DISABLED",
    );
    sec.group("grp-review");
    let approved = sec
        .ok(
            "POST",
            &format!("/api/v2/platform/roles/{auditor_id}/review"),
            json!({"approve": true, "comment": "ok"}),
        )
        .await;
    assert_eq!(approved["status"], "enabled");
    sec.group("grp-alice");
    let alice = sec
        .ok(
            "POST",
            "/api/v2/platform/users",
            json!({
                "username": "alice", "displayName": "Alice", "password": PASSWORD,
                "orgId": branch["id"], "roleIds": [auditor_id]
            }),
        )
        .await;
    assert_eq!(alice["roles"][0]["code"], "auditor");
    assert!(alice.get("password").is_none() && !alice.to_string().contains("argon2"));
    let sysadmin_id = {
        let users = sec
            .ok(
                "GET",
                "/api/v2/platform/users?keyword=sysadmin",
                Value::Null,
            )
            .await;
        users["rows"][0]["id"].as_str().unwrap().to_owned()
    };
    assert_error(
        &sec.put(
            &format!("/api/v2/platform/users/{sysadmin_id}"),
            json!({"displayName": "x", "orgId": ho, "roleIds": [sysadmin_role], "enabled": true}),
        )
        .await,
        409,
        "FAILED_PRECONDITION",
    );

    // Alice sees only her menus and is refused elsewhere.
    let (_, login) = anon
        .post(
            "/api/v2/auth/login",
            json!({"username": "alice", "password": PASSWORD}),
        )
        .await;
    let menus = login["data"]["session"]["menus"].to_string();
    assert!(
        menus.contains("audit.logs") && menus.contains("audit.logins"),
        "{menus}"
    );
    assert!(
        !menus.contains("system") && !menus.contains("audit.access"),
        "{menus}"
    );
    let alice_c = bo.login("alice", PASSWORD).await;
    assert_error(
        &alice_c.get("/api/v2/platform/users").await,
        403,
        "PERMISSION_DENIED",
    );
    assert_error(
        &alice_c
            .post(
                "/api/v2/platform/orgs",
                json!({"parentId": ho, "code": "X", "name": "X", "level": "branch"}),
            )
            .await,
        403,
        "PERMISSION_DENIED",
    );

    // The audit log shows every step, grouped as the client asked.
    for (group, action) in [
        ("grp-org", "org.create"),
        ("grp-role", "role.create"),
        ("grp-secadmin", "user.create"),
        ("grp-review", "role.approve"),
        ("grp-alice", "user.create"),
    ] {
        assert_eq!(
            audit_actions(&alice_c, &format!("txnGroupId={group}")).await,
            [action],
            "{group}"
        );
    }
    let all = alice_c
        .ok("GET", "/api/v2/audit/logs?pageSize=200", Value::Null)
        .await;
    let rows = all["rows"].as_array().unwrap();
    assert!(
        rows.iter()
            .any(|r| r["action"] == "user.retire-initial-admin")
    );
    let create = rows
        .iter()
        .find(|r| r["txnGroupId"] == "grp-alice")
        .unwrap();
    assert_eq!(create["username"], "secadmin");
    assert_eq!(create["address"], "127.0.0.1");
    assert_eq!(create["traceId"].as_str().unwrap().len(), 32);
    assert!(create["before"].is_null() && create["after"]["username"] == "alice");
    // The refusals are in the access log; the logins in the login log.
    let denied = sec
        .ok(
            "GET",
            "/api/v2/platform/access-log?allowed=false&username=alice",
            Value::Null,
        )
        .await;
    assert!(denied["totalCount"].as_i64().unwrap() >= 2, "{denied}");
    let logins = alice_c
        .ok(
            "GET",
            "/api/v2/platform/login-log?username=sysadmin",
            Value::Null,
        )
        .await;
    let outcomes: Vec<_> = logins["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert!(
        outcomes.contains(&"disabled") && outcomes.contains(&"bad_credentials"),
        "{outcomes:?}"
    );

    // Neither passwords nor tokens reach the log.
    let log = bo.stderr();
    for secret in [
        PASSWORD,
        INIT_PASSWORD,
        sec.token.as_deref().unwrap(),
        alice_c.token.as_deref().unwrap(),
    ] {
        assert!(!log.contains(secret), "a secret was logged");
    }
    let mut conn = db.connect().await;
    let audit_text: Vec<(Option<String>,)> = sqlx::query_as("SELECT after_json FROM audit_log")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert!(audit_text.iter().all(|(a,)| {
        a.as_deref()
            .is_none_or(|a| !a.contains(PASSWORD) && !a.contains("argon2"))
    }));
}

async fn lockout_then_freeze_then_unlock(kind: DbKind) {
    let db = TestDb::create(kind, "lockout").await;
    let bo = Backoffice::start(
        &db,
        "[security]\nlockout_failures = 2\nlockout_minutes = 5\nfreeze_after_lockouts = 2\n",
        &[],
    )
    .await;
    let admin = bo.admin().await;
    let ho = head_office(&admin).await;
    let user = admin
        .ok(
            "POST",
            "/api/v2/platform/users",
            json!({"username": "bob", "displayName": "Bob", "password": PASSWORD, "orgId": ho}),
        )
        .await;
    let anon = bo.anonymous();
    let login = |pw: &'static str| {
        let anon = anon.clone();
        async move {
            anon.post(
                "/api/v2/auth/login",
                json!({"username": "bob", "password": pw}),
            )
            .await
        }
    };
    assert_error(&login("Wrong#1pass").await, 401, "BAD_CREDENTIALS");
    assert_error(&login("Wrong#1pass").await, 401, "BAD_CREDENTIALS");
    let locked = login(PASSWORD).await;
    assert_error(&locked, 423, "ACCOUNT_LOCKED");
    assert!(locked.1["data"]["until"].is_string());
    // Time passes: the lockout ends (moved into the past behind the API).
    let mut conn = db.connect().await;
    sqlx::query("UPDATE users SET locked_until_ms = 1 WHERE username = 'bob'")
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(login(PASSWORD).await.0, 200);
    // A second lockout within 24 hours freezes the account for good.
    assert_error(&login("Wrong#1pass").await, 401, "BAD_CREDENTIALS");
    assert_error(&login("Wrong#1pass").await, 401, "BAD_CREDENTIALS");
    sqlx::query("UPDATE users SET locked_until_ms = 1 WHERE username = 'bob'")
        .execute(&mut conn)
        .await
        .unwrap();
    assert_error(&login(PASSWORD).await, 423, "ACCOUNT_FROZEN");
    let users = admin
        .ok("GET", "/api/v2/platform/users?status=frozen", Value::Null)
        .await;
    assert_eq!(users["rows"][0]["username"], "bob");
    let id = user["id"].as_str().unwrap();
    let unlocked = admin
        .ok(
            "POST",
            &format!("/api/v2/platform/users/{id}/unlock"),
            json!({}),
        )
        .await;
    assert_eq!(unlocked["status"], "active");
    assert_eq!(login(PASSWORD).await.0, 200);
}

/// (users, audit records).
async fn counts(admin: &Client, db: &TestDb) -> (i64, i64) {
    let users = admin.ok("GET", "/api/v2/platform/users", Value::Null).await;
    let mut conn = db.connect().await;
    let audit: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM audit_log")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    (users["totalCount"].as_i64().unwrap(), audit.0)
}

async fn bad_input_is_refused_and_changes_nothing(kind: DbKind) {
    let db = TestDb::create(kind, "badinput").await;
    let bo = Backoffice::start(&db, "", &[]).await;
    let admin = bo.admin().await;
    let ho = head_office(&admin).await;
    let before = counts(&admin, &db).await;
    let raw = |body: &'static str, ct: &'static str| {
        admin.send(
            admin
                .request(reqwest::Method::POST, "/api/v2/platform/users")
                .header("content-type", ct)
                .body(body),
        )
    };
    assert_error(
        &raw("{not json", "application/json").await,
        400,
        "INVALID_ARGUMENT",
    );
    assert_error(
        &raw("[1,2]", "application/json").await,
        400,
        "INVALID_ARGUMENT",
    );
    assert_error(
        &raw("{}", "text/plain").await,
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    );
    let valid = json!({"username": "carol", "displayName": "C", "password": PASSWORD, "orgId": ho});
    let mut unknown = valid.clone();
    unknown["isAdmin"] = json!(true);
    assert_error(
        &admin.post("/api/v2/platform/users", unknown).await,
        400,
        "INVALID_ARGUMENT",
    );
    let mut wrong_type = valid.clone();
    wrong_type["displayName"] = json!(42);
    assert_error(
        &admin.post("/api/v2/platform/users", wrong_type).await,
        400,
        "INVALID_ARGUMENT",
    );
    let mut bad_org = valid.clone();
    bad_org["orgId"] = json!("abc");
    assert_error(
        &admin.post("/api/v2/platform/users", bad_org).await,
        400,
        "INVALID_ARGUMENT",
    );
    let big = "x".repeat(300 * 1024);
    assert_error(
        &admin
            .send(
                admin
                    .request(reqwest::Method::POST, "/api/v2/platform/users")
                    .header("content-type", "application/json")
                    .body(format!("{{\"username\":\"{big}\"}}")),
            )
            .await,
        413,
        "PAYLOAD_TOO_LARGE",
    );
    for q in [
        "pageNo=0",
        "pageSize=1000",
        "pageSize=abc",
        "sortOrder=sideways",
        "colour=red",
        "orgId=1e3",
    ] {
        assert_error(
            &admin.get(&format!("/api/v2/platform/users?{q}")).await,
            400,
            "INVALID_ARGUMENT",
        );
    }
    assert_error(
        &admin.get("/api/v2/platform/users/123").await,
        400,
        "INVALID_ARGUMENT",
    );
    assert_error(
        &admin.delete("/api/v2/platform/users/abc").await,
        400,
        "INVALID_ARGUMENT",
    );
    assert_error(
        &admin.delete("/api/v2/platform/users/999").await,
        404,
        "NOT_FOUND",
    );
    assert_error(&admin.get("/api/v2/nothing-here").await, 404, "NOT_FOUND");
    assert_eq!(
        counts(&admin, &db).await,
        before,
        "a refused request changed something"
    );
    // The same request, valid, works.
    admin.ok("POST", "/api/v2/platform/users", valid).await;
    assert_eq!(counts(&admin, &db).await.0, before.0 + 1);
}

async fn injection_and_script_payloads_are_stored_as_plain_text(kind: DbKind) {
    let db = TestDb::create(kind, "inject").await;
    let bo = Backoffice::start(&db, "", &[]).await;
    let admin = bo.admin().await;
    let ho = head_office(&admin).await;
    let biz = business_admin(&bo, &admin).await;
    let payloads = [
        "'; DROP TABLE users; --",
        "\" OR \"1\"=\"1",
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        "Robert'); DELETE FROM audit_log; --",
    ];
    for (i, p) in payloads.iter().enumerate() {
        let user = admin
            .ok("POST", "/api/v2/platform/users", json!({"username": format!("u{i}x"), "displayName": p, "password": PASSWORD, "orgId": ho}))
            .await;
        assert_eq!(user["displayName"], *p);
        let org = admin
            .ok(
                "POST",
                "/api/v2/platform/orgs",
                json!({"parentId": ho, "code": format!("B{i}"), "name": p, "level": "branch"}),
            )
            .await;
        assert_eq!(org["name"], *p);
        let item = biz
            .ok(
                "POST",
                "/api/v2/platform/dicts",
                json!({"dictType": "payloads", "code": format!("c{i}"), "label": p}),
            )
            .await;
        assert_eq!(item["label"], *p);
    }
    let found = admin
        .ok(
            "GET",
            "/api/v2/platform/users?keyword=%25%27%20OR%20%271%27%3D%271",
            Value::Null,
        )
        .await;
    assert_eq!(
        found["totalCount"], 0,
        "a LIKE pattern must not match everything"
    );
    let found = admin
        .ok(
            "GET",
            "/api/v2/platform/users?keyword=DROP%20TABLE",
            Value::Null,
        )
        .await;
    assert_eq!(found["totalCount"], 1);
    let items = biz
        .ok(
            "GET",
            "/api/v2/platform/dicts?dictType=payloads&sortOrder=asc",
            Value::Null,
        )
        .await;
    let labels: Vec<_> = items["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["label"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(labels.len(), payloads.len());
    for p in payloads {
        assert!(labels.iter().any(|l| l == p));
    }
    // The tables are all there and the audit log kept every write.
    let audit = admin
        .ok("GET", "/api/v2/audit/logs?action=dict.create", Value::Null)
        .await;
    assert_eq!(audit["totalCount"], payloads.len() as i64);
    // API answers are JSON, never HTML.
    let resp = biz
        .request(reqwest::Method::GET, "/api/v2/platform/dicts")
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
}

async fn uploads_are_checked_and_served_as_attachments(kind: DbKind) {
    let db = TestDb::create(kind, "uploads").await;
    let bo = Backoffice::start(&db, "[files]\nmax_upload_bytes = 1048576\n", &[]).await;
    let admin = bo.admin().await;
    let upload = |name: &'static str, data: Vec<u8>| {
        let part = reqwest::multipart::Part::bytes(data).file_name(name);
        let form = reqwest::multipart::Form::new().part("file", part);
        admin.send(
            admin
                .request(reqwest::Method::POST, "/api/v2/files")
                .multipart(form),
        )
    };
    let png = b"\x89PNG\r\n\x1a\n0000".to_vec();
    let (status, body) = upload("logo.png", png.clone()).await;
    assert_eq!(status, 200, "{body}");
    let id = body["data"]["id"].as_str().unwrap().to_owned();
    assert_eq!(body["data"]["contentType"], "image/png");
    assert_error(
        &upload("run.sh", b"#!/bin/sh\n".to_vec()).await,
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    );
    assert_error(
        &upload("page.html", b"<script></script>".to_vec()).await,
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    );
    assert_error(
        &upload("fake.png", b"<script>alert(1)</script>".to_vec()).await,
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    );
    assert_error(
        &upload("../../etc/x.txt", b"hello".to_vec()).await,
        400,
        "INVALID_ARGUMENT",
    );
    assert_error(
        &upload("big.txt", vec![b'a'; 1_048_577]).await,
        413,
        "PAYLOAD_TOO_LARGE",
    );
    // Larger than a JSON body may be, within the upload limit.
    let (status, body) = upload("export.csv", vec![b'a'; 600 * 1024]).await;
    assert_eq!(status, 200, "{body}");
    let files = admin.ok("GET", "/api/v2/files", Value::Null).await;
    assert_eq!(files["totalCount"], 2);
    let resp = admin
        .request(reqwest::Method::GET, &format!("/api/v2/files/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert!(
        h["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment;")
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert!(
        h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("sandbox")
    );
    assert_eq!(resp.bytes().await.unwrap().to_vec(), png);
    // Stored under a generated name, without the client's, and not executable.
    let mut conn = db.connect().await;
    let (key,): (String,) = sqlx::query_as("SELECT object_key FROM files")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(!key.contains("logo") && !key.contains(".png"), "{key}");
    admin
        .ok("DELETE", &format!("/api/v2/files/{id}"), Value::Null)
        .await;
    assert_error(
        &admin.get(&format!("/api/v2/files/{id}")).await,
        404,
        "NOT_FOUND",
    );
}

async fn data_scope_and_exclusive_roles(kind: DbKind) {
    let db = TestDb::create(kind, "scope").await;
    let bo = Backoffice::start(&db, "", &[]).await;
    let admin = bo.admin().await;
    let ho = head_office(&admin).await;
    let org = |parent: String, code: &'static str, level: &'static str| {
        let admin = admin.clone();
        async move {
            admin
                .ok(
                    "POST",
                    "/api/v2/platform/orgs",
                    json!({"parentId": parent, "code": code, "name": code, "level": level}),
                )
                .await["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let b1 = org(ho.clone(), "B1", "branch").await;
    let b2 = org(ho.clone(), "B2", "branch").await;
    let s1 = org(b1.clone(), "S1", "sub_branch").await;
    assert_error(
        &admin
            .post(
                "/api/v2/platform/orgs",
                json!({"parentId": s1, "code": "BAD", "name": "x", "level": "branch"}),
            )
            .await,
        400,
        "INVALID_ARGUMENT",
    );
    // Roles are reviewed by a second administrator.
    let sysadmin_role = role_id(&admin, "sysadmin").await;
    admin.ok("POST", "/api/v2/platform/users", json!({"username": "second", "displayName": "S", "password": PASSWORD, "orgId": ho, "roleIds": []})).await;
    let make_role = |code: &'static str, scope: &'static str, excl: Vec<String>| {
        let admin = admin.clone();
        async move {
            admin.ok("POST", "/api/v2/platform/roles", json!({"code": code, "name": code, "dataScope": scope,
                "permissions": ["platform:user:query", "platform:org:query"], "exclusiveWith": excl})).await["id"]
                .as_str().unwrap().to_owned()
        }
    };
    let branch_admin = make_role("branchadmin", "org_subtree", vec![]).await;
    let teller = make_role("teller", "own_org", vec![branch_admin.clone()]).await;
    // The reviewer needs the review permission: give "second" the sysadmin role through the
    // database-free path — the initial admin assigns it (this retires the initial admin only
    // when "second" signs in, which happens last).
    let second_id = admin
        .ok("GET", "/api/v2/platform/users?keyword=second", Value::Null)
        .await["rows"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let second_user =
        json!({"displayName": "S", "orgId": ho, "roleIds": [sysadmin_role], "enabled": true});
    admin
        .ok(
            "PUT",
            &format!("/api/v2/platform/users/{second_id}"),
            second_user,
        )
        .await;
    // Mutually exclusive roles cannot be held together.
    assert_error(
        &admin.post("/api/v2/platform/users", json!({"username": "both", "displayName": "B", "password": PASSWORD, "orgId": b1, "roleIds": [branch_admin, teller]})).await,
        409,
        "ROLE_CONFLICT",
    );
    admin.ok("POST", "/api/v2/platform/users", json!({"username": "mgr1", "displayName": "M", "password": PASSWORD, "orgId": b1, "roleIds": [branch_admin]})).await;
    admin
        .ok(
            "POST",
            "/api/v2/platform/users",
            json!({"username": "sub1", "displayName": "S", "password": PASSWORD, "orgId": s1}),
        )
        .await;
    admin
        .ok(
            "POST",
            "/api/v2/platform/users",
            json!({"username": "other2", "displayName": "O", "password": PASSWORD, "orgId": b2}),
        )
        .await;
    // Before review the role grants nothing.
    let mgr = bo.login("mgr1", PASSWORD).await;
    assert_error(
        &mgr.get("/api/v2/platform/users").await,
        403,
        "PERMISSION_DENIED",
    );
    let second = bo.login("second", PASSWORD).await;
    second
        .ok(
            "POST",
            &format!("/api/v2/platform/roles/{branch_admin}/review"),
            json!({"approve": true}),
        )
        .await;
    // Now mgr1 sees his branch and what is under it, nothing else.
    let users = mgr
        .ok("GET", "/api/v2/platform/users?pageSize=200", Value::Null)
        .await;
    let mut names: Vec<_> = users["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["mgr1", "sub1"]);
    let tree = mgr.ok("GET", "/api/v2/platform/orgs", Value::Null).await;
    assert_eq!(tree.as_array().unwrap().len(), 1);
    assert_eq!(tree[0]["code"], "B1");
    assert_eq!(tree[0]["children"][0]["code"], "S1");
}

async fn blacklist_and_idle_sessions(kind: DbKind) {
    let db = TestDb::create(kind, "blacklist").await;
    let bo = Backoffice::start(&db, "[security]\nsession_idle_minutes = 0.05\n", &[]).await;
    let admin = bo.admin().await;
    let ho = head_office(&admin).await;
    admin
        .ok(
            "POST",
            "/api/v2/platform/users",
            json!({"username": "eve", "displayName": "E", "password": PASSWORD, "orgId": ho}),
        )
        .await;
    let eve = bo.login("eve", PASSWORD).await;
    assert_eq!(eve.get("/api/v2/auth/session").await.0, 200);
    let entry = admin
        .ok(
            "POST",
            "/api/v2/platform/blacklist",
            json!({"kind": "user", "value": "eve", "reason": "test"}),
        )
        .await;
    assert_error(&eve.get("/api/v2/auth/session").await, 403, "BLACKLISTED");
    assert_error(
        &bo.anonymous()
            .post(
                "/api/v2/auth/login",
                json!({"username": "eve", "password": PASSWORD}),
            )
            .await,
        403,
        "BLACKLISTED",
    );
    assert_error(
        &admin
            .post(
                "/api/v2/platform/blacklist",
                json!({"kind": "address", "value": "not-an-ip"}),
            )
            .await,
        400,
        "INVALID_ARGUMENT",
    );
    admin
        .ok(
            "DELETE",
            &format!(
                "/api/v2/platform/blacklist/{}",
                entry["id"].as_str().unwrap()
            ),
            Value::Null,
        )
        .await;
    let eve = bo.login("eve", PASSWORD).await;
    // Used within the idle time, the session lives on; left alone longer, it ends.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(eve.get("/api/v2/auth/session").await.0, 200);
    }
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_error(
        &eve.get("/api/v2/auth/session").await,
        401,
        "UNAUTHENTICATED",
    );
    let eve = bo.login("eve", PASSWORD).await;
    eve.ok("POST", "/api/v2/auth/logout", json!({})).await;
    assert_error(
        &eve.get("/api/v2/auth/session").await,
        401,
        "UNAUTHENTICATED",
    );
}

async fn scheduled_tasks_run_on_schedule_and_on_demand(kind: DbKind) {
    let db = TestDb::create(kind, "tasks").await;
    let bo = Backoffice::start(&db, "", &[]).await;
    let admin = bo.admin().await;
    let tasks = admin.ok("GET", "/api/v2/platform/tasks", Value::Null).await;
    assert_eq!(tasks["totalCount"], 2, "the built-in tasks exist");
    assert_error(
        &admin.post("/api/v2/platform/tasks", json!({"name": "x", "cron": "not cron", "action": "audit.maintain", "enabled": true})).await,
        400,
        "INVALID_ARGUMENT",
    );
    assert_error(
        &admin
            .post(
                "/api/v2/platform/tasks",
                json!({"name": "x", "cron": "* * * * *", "action": "rm -rf /", "enabled": true}),
            )
            .await,
        400,
        "INVALID_ARGUMENT",
    );
    let task = admin
        .ok("POST", "/api/v2/platform/tasks", json!({"name": "every second", "cron": "* * * * * *", "action": "platform.purge-logs", "enabled": true}))
        .await;
    let id = task["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let runs = admin
            .ok(
                "GET",
                &format!("/api/v2/platform/tasks/{id}/runs"),
                Value::Null,
            )
            .await;
        if runs["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["trigger"] == "schedule" && r["outcome"] == "ok")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the scheduler never ran the task: {runs}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    admin.ok("PUT", &format!("/api/v2/platform/tasks/{id}"), json!({"name": "every second", "cron": "* * * * * *", "action": "platform.purge-logs", "enabled": false})).await;
    let maintain = tasks["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["action"] == "audit.maintain")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let run = admin
        .ok(
            "POST",
            &format!("/api/v2/platform/tasks/{maintain}/run"),
            json!({}),
        )
        .await;
    assert_eq!(run["outcome"], "ok", "{run}");
    assert_eq!(run["trigger"], "manual");
    if kind == DbKind::Postgres {
        assert!(
            run["message"].as_str().unwrap().contains("audit_log_p"),
            "{run}"
        );
    }
    let audit = admin
        .ok("GET", "/api/v2/audit/logs?action=task.run", Value::Null)
        .await;
    assert_eq!(audit["totalCount"], 1);
}

#[tokio::test]
async fn bad_configuration_exits_64_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    for (toml, env) in [
        (
            format!("[http]\nlisten = \"127.0.0.1:{port}\"\nunknown_key = 1\n"),
            None,
        ),
        (
            format!("[http]\nlisten = \"127.0.0.1:{port}\"\n[database]\nurl = \"mysql://x\"\n"),
            None,
        ),
        (
            format!("[http]\nlisten = \"127.0.0.1:{port}\"\n[security]\nlockout_failures = 0\n"),
            None,
        ),
        (
            format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"),
            Some(("OPENTELLER_NODE_ID", "5000")),
        ),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, toml).unwrap();
        let mut cmd = std::process::Command::new(binary());
        cmd.arg("serve")
            .arg("--config")
            .arg(&path)
            .current_dir(dir.path());
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(64),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("configuration"));
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "the port was bound"
        );
    }
    let out = std::process::Command::new(binary())
        .args(["serve", "--service", "nonsense"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let out = std::process::Command::new(binary())
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[tokio::test(flavor = "multi_thread")]
async fn health_metrics_openapi_and_every_listed_endpoint_is_routed() {
    let db = TestDb::create(DbKind::Sqlite, "routes").await;
    let bo = Backoffice::start(&db, "", &[]).await;
    let admin = bo.admin().await;
    assert_eq!(admin.get("/healthz").await.0, 200);
    let (status, ready) = admin.get("/readyz").await;
    assert_eq!(
        (status, ready["data"]["database"].clone()),
        (200, json!(true))
    );
    let doc = admin.get("/api/v2/openapi.json").await.1;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() > 30);
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            if path.ends_with("/logout") {
                continue;
            }
            let url = path.replace("{id}", "1").replace("{locale}", "en");
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (status, body) = admin.send(admin.request(m, &url).json(&json!({}))).await;
            let unrouted = status == 404 && body["message"] == "no such route";
            assert!(
                !unrouted && status != 405,
                "{method} {path} is not routed: {status} {body}"
            );
        }
    }
    let metrics = reqwest::get(format!("{}/metrics", bo.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("openteller_backoffice_http_requests_total"),
        "{metrics}"
    );
    assert!(metrics.contains("openteller_backoffice_logins_total{outcome=\"success\"}"));
    // The console is served, with a strict policy, for any non-API path.
    let resp = reqwest::get(format!("{}/users", bo.base)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    assert!(resp.text().await.unwrap().contains("<div id=\"app\">"));
}

#[tokio::test(flavor = "multi_thread")]
async fn services_in_separate_processes_share_sessions_through_redis_and_postgres() {
    let db = TestDb::create(DbKind::Postgres, "split").await;
    let redis =
        std::env::var("OPENTELLER_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let prefix = format!("bo-test-{}-{}:", std::process::id(), free_port());
    let cache = format!("[cache]\nredis = \"{redis}\"\nprefix = \"{prefix}\"\n");
    let platform = Backoffice::start(&db, &cache, &["platform"]).await;
    let audit = Backoffice::start(&db, &cache, &["audit"]).await;
    let root = platform.admin().await;
    let admin = business_admin(&platform, &root).await;
    admin
        .ok(
            "POST",
            "/api/v2/platform/dicts",
            json!({"dictType": "t", "code": "a", "label": "A"}),
        )
        .await;
    // A session from the platform process works on the audit process (the business admin
    // may not read the audit log: that is a technical permission).
    assert_error(
        &{
            let mut c = audit.anonymous();
            c.token = admin.token.clone();
            c
        }
        .get("/api/v2/audit/logs")
        .await,
        403,
        "PERMISSION_DENIED",
    );
    let mut on_audit = audit.anonymous();
    on_audit.token = root.token.clone();
    let found = on_audit
        .ok("GET", "/api/v2/audit/logs?action=dict.create", Value::Null)
        .await;
    assert_eq!(found["totalCount"], 1);
    // Each process serves only its own services.
    assert_error(
        &on_audit.get("/api/v2/platform/users").await,
        404,
        "NOT_FOUND",
    );
    assert_error(&root.get("/api/v2/audit/logs").await, 404, "NOT_FOUND");
    // Logging out on one process ends the session on both.
    root.ok("POST", "/api/v2/auth/logout", json!({})).await;
    assert_error(
        &on_audit.get("/api/v2/audit/logs").await,
        401,
        "UNAUTHENTICATED",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_partitions_are_created_detached_and_dropped() {
    let db = TestDb::create(DbKind::Postgres, "partitions").await;
    let bo = Backoffice::start(&db, "", &[]).await;
    let admin = bo.admin().await;
    let mut conn = db.connect().await;
    // Two old months: 15 months ago (detach only) and 20 months ago (detach and drop).
    let month_ms = |months_ago: i32| -> (String, i64, i64) {
        use chrono::Datelike;
        let today = chrono::Utc::now().date_naive();
        let index = today.year() * 12 + today.month() as i32 - 1 - months_ago;
        let start = |i: i32| {
            chrono::NaiveDate::from_ymd_opt(i / 12, (i % 12) as u32 + 1, 1)
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap()
                .and_utc()
        };
        let (s, e) = (start(index), start(index + 1));
        (
            format!("audit_log_p{:04}{:02}", s.year(), s.month()),
            s.timestamp_millis(),
            e.timestamp_millis(),
        )
    };
    for ago in [15, 20] {
        let (name, from, to) = month_ms(ago);
        sqlx::raw_sql(&format!(
            "CREATE TABLE {name} PARTITION OF audit_log FOR VALUES FROM ({from}) TO ({to})"
        ))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let tasks = admin.ok("GET", "/api/v2/platform/tasks", Value::Null).await;
    let maintain = tasks["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["action"] == "audit.maintain")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let run = admin
        .ok(
            "POST",
            &format!("/api/v2/platform/tasks/{maintain}/run"),
            json!({}),
        )
        .await;
    let report: Value = serde_json::from_str(run["message"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("{e}: {run}"));
    let (p15, _, _) = month_ms(15);
    let (p20, _, _) = month_ms(20);
    assert!(
        report["detached"].as_array().unwrap().contains(&json!(p15)),
        "{report}"
    );
    assert!(
        report["dropped"].as_array().unwrap().contains(&json!(p20)),
        "{report}"
    );
    assert!(
        !report["dropped"].as_array().unwrap().contains(&json!(p15)),
        "{report}"
    );
    assert_eq!(
        report["created"].as_array().unwrap().len(),
        4,
        "last month to two ahead: {report}"
    );
    assert_eq!(
        report["vacuumed"].as_array().unwrap().len(),
        2,
        "last month and this month are vacuumed: {report}"
    );
    let exists = |name: String| {
        let url = db.url.clone();
        async move {
            let mut c = <sqlx::AnyConnection as sqlx::Connection>::connect(&url)
                .await
                .unwrap();
            let (n,): (i64,) = sqlx::query_as(&format!(
                "SELECT COUNT(*) FROM pg_tables WHERE tablename = '{name}'"
            ))
            .fetch_one(&mut c)
            .await
            .unwrap();
            n == 1
        }
    };
    assert!(exists(p15).await, "a detached partition is kept");
    assert!(
        !exists(p20).await,
        "a partition past the drop horizon is gone"
    );
    // New records land in this month's partition, not the default one.
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM audit_log_default")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    admin
        .ok(
            "POST",
            "/api/v2/platform/i18n",
            json!({"locale": "en", "key": "x.y", "text": "P"}),
        )
        .await;
    let (m,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM audit_log_default")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, m);
}
