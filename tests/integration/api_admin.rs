//! Admin endpoints for subscribers and resellers through the router, on both backends:
//! upserts, CSV imports (all or nothing, line-numbered errors), tree validation, role
//! checks, body limits, and scoping that follows the data.

use std::collections::BTreeSet;

use radacctd::api::admin::{import_resellers_csv, import_subscribers_csv};
use serde_json::{Value, json};

use crate::both_backends;
use crate::harness::{
    Acct, Backend, Harness, admin_token, api_json, now, oneshot, seed_reseller_tree, token,
};

both_backends!(
    admin_endpoints_refuse_every_other_role,
    put_subscriber_creates_moves_and_validates,
    subscribers_are_listed_by_page_and_reseller,
    subscriber_import_is_all_or_nothing,
    put_reseller_checks_parents_and_cycles,
    reseller_import_accepts_parents_after_children_and_refuses_cycles,
    scoping_follows_imports,
    oversized_bodies_are_refused,
    bad_path_segments_are_a_json_400,
);

async fn send(
    h: &Harness,
    method: &str,
    uri: &str,
    tok: Option<&str>,
    ctype: &str,
    body: &str,
) -> (u16, Value) {
    let (status, bytes, _) =
        oneshot(h, method, uri, tok, Some((ctype, body.as_bytes().to_vec()))).await;
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, v)
}

async fn put(h: &Harness, uri: &str, body: &str) -> (u16, Value) {
    send(
        h,
        "PUT",
        uri,
        Some(&admin_token()),
        "application/json",
        body,
    )
    .await
}

async fn import(h: &Harness, what: &str, csv: &str) -> (u16, Value) {
    send(
        h,
        "POST",
        &format!("/api/{what}/import"),
        Some(&admin_token()),
        "text/csv",
        csv,
    )
    .await
}

fn bad(message: &str) -> Value {
    json!({ "success": false, "message": message })
}

async fn subscriber(h: &Harness, username: &str) -> (u16, Value) {
    api_json(
        h,
        &format!("/api/subscribers/{username}"),
        Some(&admin_token()),
    )
    .await
}

async fn resellers(h: &Harness) -> Value {
    let (status, v) = api_json(h, "/api/resellers", Some(&admin_token())).await;
    assert_eq!(status, 200, "{v}");
    v["data"].clone()
}

/// Usernames of the active sessions the token sees.
async fn visible(h: &Harness, tok: &str) -> BTreeSet<String> {
    let (status, v) = api_json(h, "/api/sessions?limit=500", Some(tok)).await;
    assert_eq!(status, 200, "{v}");
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["username"].as_str().unwrap().to_owned())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Method, path and optional (content type, body) of one request.
type Call = (
    &'static str,
    &'static str,
    Option<(&'static str, &'static str)>,
);

async fn admin_endpoints_refuse_every_other_role(b: Backend) {
    let h = Harness::start(b).await;
    seed_reseller_tree(h.store()).await;
    let everything = [
        "sessions.view",
        "sessions.view_all",
        "subscribers.disconnect",
    ];
    let reseller = token("reseller", Some(1), None, &everything);
    let subscriber_tok = token("subscriber", None, Some("r1user"), &everything);
    let calls: [Call; 7] = [
        ("GET", "/api/subscribers", None),
        ("GET", "/api/subscribers/r1user", None),
        (
            "PUT",
            "/api/subscribers/r1user",
            Some(("application/json", r#"{"reseller_id": 4}"#)),
        ),
        (
            "POST",
            "/api/subscribers/import",
            Some(("text/csv", "username,reseller_id\nr1user,4\n")),
        ),
        ("GET", "/api/resellers", None),
        (
            "PUT",
            "/api/resellers/9",
            Some(("application/json", r#"{"parent_id": null}"#)),
        ),
        (
            "POST",
            "/api/resellers/import",
            Some(("text/csv", "id,parent_id,name\n9,,x\n")),
        ),
    ];
    for (method, uri, body) in calls {
        let body = body.map(|(c, b)| (c, b.as_bytes().to_vec()));
        for tok in [&reseller, &subscriber_tok] {
            let (status, bytes, _) = oneshot(&h, method, uri, Some(tok), body.clone()).await;
            assert_eq!(status, 403, "{method} {uri}");
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(v, bad("not authorized"), "{method} {uri}");
        }
        let (status, bytes, _) = oneshot(&h, method, uri, None, body.clone()).await;
        assert_eq!(status, 401, "{method} {uri}");
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v, bad("missing token"));
    }
    // Nothing the refused calls carried was written.
    assert_eq!(subscriber(&h, "r1user").await.1["data"]["reseller_id"], 1);
    assert_eq!(resellers(&h).await.as_array().unwrap().len(), 4);
    h.server.stop().await;
}

async fn put_subscriber_creates_moves_and_validates(b: Backend) {
    let h = Harness::start(b).await;
    seed_reseller_tree(h.store()).await;

    let (status, v) = put(
        &h,
        "/api/subscribers/alice@example.lb",
        r#"{"reseller_id": 2}"#,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let alice = json!({ "username": "alice@example.lb", "reseller_id": 2, "is_online": false });
    assert_eq!(v, json!({ "success": true, "data": alice }));
    assert_eq!(
        subscriber(&h, "alice@example.lb").await,
        (200, json!({ "success": true, "data": alice }))
    );

    // Moved to no reseller, then back.
    let (status, v) = put(
        &h,
        "/api/subscribers/alice@example.lb",
        r#"{"reseller_id": null}"#,
    )
    .await;
    assert_eq!((status, &v["data"]["reseller_id"]), (200, &Value::Null));
    let (status, _) = put(
        &h,
        "/api/subscribers/alice@example.lb",
        r#"{"reseller_id": 3}"#,
    )
    .await;
    assert_eq!(status, 200);

    // Refusals leave the subscriber as it was.
    let cases = [
        (r#"{"reseller_id": 99}"#, "unknown reseller_id".to_owned()),
        (r#"{}"#, "missing field reseller_id".to_owned()),
        (r#"{"reseller_id": "2"}"#, "invalid reseller_id, must be a positive integer or null".to_owned()),
        (r#"{"reseller_id": 0}"#, "invalid reseller_id, must be a positive integer or null".to_owned()),
        (r#"{"reseller_id": 2.5}"#, "invalid reseller_id, must be a positive integer or null".to_owned()),
        (r#"{"reseler_id": 2}"#, "unknown field \"reseler_id\", expected reseller_id".to_owned()),
        (r#"[2]"#, "request body must be a JSON object such as {\"reseller_id\": 2}".to_owned()),
        ("", "request body must be a JSON object such as {\"reseller_id\": 2}".to_owned()),
        (
            r#"{"reseller_id": 2"#,
            "invalid JSON body at line 1 column 17, expected an object such as {\"reseller_id\": 2}"
                .to_owned(),
        ),
    ];
    for (body, message) in cases {
        let (status, v) = put(&h, "/api/subscribers/alice@example.lb", body).await;
        assert_eq!((status, v), (400, bad(&message)), "body {body:?}");
    }
    assert_eq!(
        subscriber(&h, "alice@example.lb").await.1["data"]["reseller_id"],
        3
    );
    let (status, v) = put(&h, "/api/subscribers/ghost", r#"{"reseller_id": 99}"#).await;
    assert_eq!((status, v), (400, bad("unknown reseller_id")));
    assert_eq!(
        subscriber(&h, "ghost").await,
        (404, bad("subscriber not found"))
    );

    // A username with a control character cannot be a RADIUS User-Name.
    let (status, v) = put(&h, "/api/subscribers/bad%0Aname", r#"{"reseller_id": 1}"#).await;
    assert_eq!(
        (status, v),
        (
            400,
            bad("invalid username, must be 1 to 253 bytes without control characters")
        )
    );

    // A new subscriber with an open session is created online.
    h.client
        .send(&Acct::start("dave", "D1").at(now() - 5))
        .await;
    let (status, v) = put(&h, "/api/subscribers/dave", r#"{"reseller_id": 4}"#).await;
    assert_eq!(status, 200);
    assert_eq!(
        v["data"],
        json!({ "username": "dave", "reseller_id": 4, "is_online": true })
    );
    h.server.stop().await;
}

async fn subscribers_are_listed_by_page_and_reseller(b: Backend) {
    let h = Harness::start(b).await;
    seed_reseller_tree(h.store()).await;
    let admin = admin_token();
    let names = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["username"].as_str().unwrap().to_owned())
            .collect()
    };

    let (status, v) = api_json(&h, "/api/subscribers", Some(&admin)).await;
    assert_eq!(status, 200);
    assert_eq!(
        names(&v),
        ["nobody", "r1user", "r2user", "r3user", "r4user"]
    );
    assert_eq!(
        v["pagination"],
        json!({ "page": 1, "limit": 50, "total": 5 })
    );
    assert_eq!(
        v["data"][1],
        json!({ "username": "r1user", "reseller_id": 1, "is_online": false })
    );

    let (_, v) = api_json(&h, "/api/subscribers?limit=2&page=3", Some(&admin)).await;
    assert_eq!(names(&v), ["r4user"]);
    assert_eq!(
        v["pagination"],
        json!({ "page": 3, "limit": 2, "total": 5 })
    );
    let (_, v) = api_json(&h, "/api/subscribers?limit=2&page=4", Some(&admin)).await;
    assert_eq!(names(&v), Vec::<String>::new());

    // Only the reseller's own subscribers, not its subtree.
    let (_, v) = api_json(&h, "/api/subscribers?reseller_id=2", Some(&admin)).await;
    assert_eq!(names(&v), ["r2user"]);
    assert_eq!(v["pagination"]["total"], 1);
    let (_, v) = api_json(&h, "/api/subscribers?reseller_id=42", Some(&admin)).await;
    assert_eq!(v["pagination"]["total"], 0);

    for (query, message) in [
        ("reseller_id=x", "invalid reseller_id, must be an integer"),
        ("limit=501", "invalid limit, must be between 1 and 500"),
        ("page=0", "invalid page, must be a positive integer"),
    ] {
        let (status, v) = api_json(&h, &format!("/api/subscribers?{query}"), Some(&admin)).await;
        assert_eq!((status, v), (400, bad(message)), "{query}");
    }
    h.server.stop().await;
}

async fn subscriber_import_is_all_or_nothing(b: Backend) {
    let h = Harness::start(b).await;
    seed_reseller_tree(h.store()).await;

    let (status, v) = import(
        &h,
        "subscribers",
        "username,reseller_id\r\nu1,2\r\n\r\n\"u2\",\r\nr1user,4\r\n",
    )
    .await;
    assert_eq!(
        (status, v),
        (200, json!({ "success": true, "imported": 3 }))
    );
    assert_eq!(subscriber(&h, "u1").await.1["data"]["reseller_id"], 2);
    assert_eq!(
        subscriber(&h, "u2").await.1["data"]["reseller_id"],
        Value::Null
    );
    assert_eq!(
        subscriber(&h, "r1user").await.1["data"]["reseller_id"],
        4,
        "existing one moved"
    );

    let refused = [
        (
            "username,reseller_id\nx1,1\nx2,zz\n",
            "line 3: invalid reseller_id \"zz\", must be a positive integer or empty",
        ),
        (
            "username,reseller_id\nx1,1\nx2,1\nx3,77\nx4,78\n",
            "line 4: unknown reseller_id 77",
        ),
        (
            "username,reseller_id\nx1,1\nx1,2\n",
            "line 3: duplicate username \"x1\" (first on line 2)",
        ),
        (
            "username,reseller_id\nx1,1,3\n",
            "line 2: expected 2 fields (username,reseller_id), found 3",
        ),
        (
            "user,reseller\nx1,1\n",
            "line 1: expected the header username,reseller_id",
        ),
        (
            "",
            "line 1: empty file, expected the header username,reseller_id",
        ),
        (
            "username,reseller_id\nx1,\"1\n",
            "line 2: unterminated quoted field",
        ),
    ];
    for (csv, message) in refused {
        let (status, v) = import(&h, "subscribers", csv).await;
        assert_eq!((status, v), (400, bad(message)), "{csv:?}");
    }
    let (status, v) = send(
        &h,
        "POST",
        "/api/subscribers/import",
        Some(&admin_token()),
        "text/csv",
        "username,reseller_id\nx1,1\n",
    )
    .await;
    assert_eq!(status, 200, "{v}");
    // x1 came only from the last, valid import; nothing of the refused ones stayed.
    assert_eq!(
        h.scalar("SELECT COUNT(*) FROM subscribers").await,
        5 + 2 + 1
    );
    assert_eq!(subscriber(&h, "x2").await.0, 404);

    // Not UTF-8: named by line, nothing imported.
    let (status, bytes, _) = oneshot(
        &h,
        "POST",
        "/api/subscribers/import",
        Some(&admin_token()),
        Some((
            "text/csv",
            b"username,reseller_id\ny1,1\ny\xff2,1\n".to_vec(),
        )),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        serde_json::from_slice::<Value>(&bytes).unwrap(),
        bad("line 3: CSV must be UTF-8 text")
    );

    // The function the CLI calls: same rules, same messages.
    assert_eq!(
        import_subscribers_csv(h.store(), "username,reseller_id\ncli1,3\n")
            .await
            .unwrap(),
        1
    );
    assert_eq!(subscriber(&h, "cli1").await.1["data"]["reseller_id"], 3);
    let err = import_subscribers_csv(h.store(), "username,reseller_id\ncli2,5\n")
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "line 2: unknown reseller_id 5");

    // A large import goes through in one request.
    let mut csv = String::from("username,reseller_id\n");
    for i in 0..20_000 {
        csv.push_str(&format!("bulk{i:05},{}\n", 1 + i % 4));
    }
    let (status, v) = import(&h, "subscribers", &csv).await;
    assert_eq!(
        (status, v),
        (200, json!({ "success": true, "imported": 20_000 }))
    );
    assert_eq!(
        h.scalar(
            "SELECT COUNT(*) FROM subscribers WHERE username LIKE 'bulk%' AND reseller_id = 3"
        )
        .await,
        5_000
    );
    h.server.stop().await;
}

async fn put_reseller_checks_parents_and_cycles(b: Backend) {
    let h = Harness::start(b).await;
    seed_reseller_tree(h.store()).await;

    let (status, v) = put(
        &h,
        "/api/resellers/5",
        r#"{"parent_id": 3, "name": "deep"}"#,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v,
        json!({ "success": true, "data": { "id": 5, "parent_id": 3, "name": "deep" } })
    );
    // Omitting the name keeps it.
    let (status, v) = put(&h, "/api/resellers/5", r#"{"parent_id": 2}"#).await;
    assert_eq!(status, 200);
    assert_eq!(
        v["data"],
        json!({ "id": 5, "parent_id": 2, "name": "deep" })
    );

    let cases = [
        (
            "/api/resellers/6",
            r#"{"parent_id": 42, "name": "x"}"#,
            "unknown parent_id",
        ),
        // 1 under its own descendant 5 (1 ← 2 ← 5).
        (
            "/api/resellers/1",
            r#"{"parent_id": 5}"#,
            "reseller tree must not contain cycles",
        ),
        (
            "/api/resellers/2",
            r#"{"parent_id": 2}"#,
            "reseller tree must not contain cycles",
        ),
        (
            "/api/resellers/6",
            r#"{"name": "x"}"#,
            "missing field parent_id",
        ),
        (
            "/api/resellers/6",
            r#"{"parent_id": 1, "nam": "x"}"#,
            "unknown field \"nam\", expected parent_id, name",
        ),
        (
            "/api/resellers/6",
            r#"{"parent_id": 1, "name": 7}"#,
            "invalid name, must be a string",
        ),
        (
            "/api/resellers/abc",
            r#"{"parent_id": 1}"#,
            "invalid reseller id, must be a positive integer",
        ),
        (
            "/api/resellers/0",
            r#"{"parent_id": 1}"#,
            "invalid reseller id, must be a positive integer",
        ),
    ];
    for (uri, body, message) in cases {
        let (status, v) = put(&h, uri, body).await;
        assert_eq!((status, v), (400, bad(message)), "{uri} {body}");
    }
    assert_eq!(
        resellers(&h).await,
        json!([
            { "id": 1, "parent_id": null, "name": "top" },
            { "id": 2, "parent_id": 1, "name": "mid" },
            { "id": 3, "parent_id": 2, "name": "leaf" },
            { "id": 4, "parent_id": 1, "name": "side" },
            { "id": 5, "parent_id": 2, "name": "deep" },
        ]),
        "refused changes left the tree as it was"
    );

    // Moving a subtree elsewhere is fine, and so is making a root.
    let (status, _) = put(&h, "/api/resellers/2", r#"{"parent_id": 4, "name": "mid"}"#).await;
    assert_eq!(status, 200);
    let (status, v) = put(&h, "/api/resellers/4", r#"{"parent_id": null}"#).await;
    assert_eq!(status, 200);
    assert_eq!(
        v["data"],
        json!({ "id": 4, "parent_id": null, "name": "side" })
    );
    // Now 4 is above 2, so 4 under 3 (below 2) is a cycle.
    let (status, v) = put(&h, "/api/resellers/4", r#"{"parent_id": 3}"#).await;
    assert_eq!(
        (status, v),
        (400, bad("reseller tree must not contain cycles"))
    );
    h.server.stop().await;
}

async fn reseller_import_accepts_parents_after_children_and_refuses_cycles(b: Backend) {
    let h = Harness::start(b).await;
    seed_reseller_tree(h.store()).await;

    let (status, v) = import(
        &h,
        "resellers",
        "id,parent_id,name\n12,11,\"c, the third\"\n11,10,b\n10,,a\n3,12,leaf\n",
    )
    .await;
    assert_eq!(
        (status, v),
        (200, json!({ "success": true, "imported": 4 }))
    );
    let tree = resellers(&h).await;
    assert_eq!(
        tree.as_array().unwrap()[2..],
        [
            json!({ "id": 3, "parent_id": 12, "name": "leaf" }),
            json!({ "id": 4, "parent_id": 1, "name": "side" }),
            json!({ "id": 10, "parent_id": null, "name": "a" }),
            json!({ "id": 11, "parent_id": 10, "name": "b" }),
            json!({ "id": 12, "parent_id": 11, "name": "c, the third" }),
        ]
    );

    let refused = [
        (
            "id,parent_id,name\n20,,x\n21,22,y\n22,21,z\n",
            "line 3: reseller tree must not contain cycles (reseller 21 would be its own ancestor)",
        ),
        // 10 under 3, which is now below 12 ← 11 ← 10.
        (
            "id,parent_id,name\n20,,x\n10,3,a\n",
            "line 3: reseller tree must not contain cycles (reseller 10 would be its own ancestor)",
        ),
        (
            "id,parent_id,name\n20,,x\n30,99,q\n",
            "line 3: unknown parent_id 99",
        ),
        (
            "id,parent_id,name\n20,,x\n20,,y\n",
            "line 3: duplicate id 20 (first on line 2)",
        ),
        (
            "id,parent_id,name\nx,,y\n",
            "line 2: invalid id \"x\", must be a positive integer",
        ),
        (
            "id,parent,name\n20,,x\n",
            "line 1: expected the header id,parent_id,name",
        ),
    ];
    for (csv, message) in refused {
        let (status, v) = import(&h, "resellers", csv).await;
        assert_eq!((status, v), (400, bad(message)), "{csv:?}");
    }
    assert_eq!(resellers(&h).await, tree, "refused imports changed nothing");

    // The function the CLI calls.
    assert_eq!(
        import_resellers_csv(h.store(), "id,parent_id,name\n40,41,child\n41,,root\n")
            .await
            .unwrap(),
        2
    );
    let err = import_resellers_csv(h.store(), "id,parent_id,name\n41,40,root\n")
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 2: reseller tree must not contain cycles (reseller 41 would be its own ancestor)"
    );
    h.server.stop().await;
}

async fn scoping_follows_imports(b: Backend) {
    let h = Harness::start(b).await;
    let (status, _) = import(
        &h,
        "resellers",
        "id,parent_id,name\n11,10,north-east\n10,,north\n20,,south\n",
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = import(
        &h,
        "subscribers",
        "username,reseller_id\nn1,10\nn2,11\ns1,20\n",
    )
    .await;
    assert_eq!(status, 200);
    let t = now();
    for (user, sid) in [("n1", "1"), ("n2", "2"), ("s1", "3"), ("stranger", "4")] {
        h.client.send(&Acct::start(user, sid).at(t - 5)).await;
    }
    let north = token("reseller", Some(10), None, &["sessions.view"]);
    let north_east = token("reseller", Some(11), None, &["sessions.view"]);
    let south = token("reseller", Some(20), None, &["sessions.view"]);
    assert_eq!(visible(&h, &north).await, set(&["n1", "n2"]));
    assert_eq!(visible(&h, &north_east).await, set(&["n2"]));
    assert_eq!(visible(&h, &south).await, set(&["s1"]));
    let (_, v) = api_json(&h, "/api/sessions/count", Some(&north)).await;
    assert_eq!(v["count"], 2);

    // Moving a subscriber moves its sessions between scopes at the next request.
    let (status, _) = import(
        &h,
        "subscribers",
        "username,reseller_id\nn2,20\nstranger,11\n",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(visible(&h, &north).await, set(&["n1", "stranger"]));
    assert_eq!(visible(&h, &south).await, set(&["n2", "s1"]));

    // Moving a reseller moves its subtree: south under north.
    let (status, _) = import(&h, "resellers", "id,parent_id,name\n20,10,south\n").await;
    assert_eq!(status, 200);
    assert_eq!(
        visible(&h, &north).await,
        set(&["n1", "n2", "s1", "stranger"])
    );
    let (status, _) = put(&h, "/api/subscribers/s1", r#"{"reseller_id": null}"#).await;
    assert_eq!(status, 200);
    assert_eq!(visible(&h, &south).await, set(&["n2"]));
    h.server.stop().await;
}

async fn oversized_bodies_are_refused(b: Backend) {
    let h = Harness::start(b).await;
    seed_reseller_tree(h.store()).await;
    let padding = " ".repeat(64 * 1024);
    let (status, v) = put(
        &h,
        "/api/subscribers/big",
        &format!("{{\"reseller_id\": 1}}{padding}"),
    )
    .await;
    assert_eq!(
        (status, v),
        (413, bad("request body too large, at most 64 KiB"))
    );
    let (status, v) = put(
        &h,
        "/api/resellers/8",
        &format!("{{\"parent_id\": 1}}{padding}"),
    )
    .await;
    assert_eq!(
        (status, v),
        (413, bad("request body too large, at most 64 KiB"))
    );

    let mut csv = String::from("username,reseller_id\n");
    while csv.len() <= 10 * 1024 * 1024 {
        csv.push_str("someone-with-a-long-name@example.lb,1\n");
    }
    let (status, v) = import(&h, "subscribers", &csv).await;
    assert_eq!(
        (status, v),
        (413, bad("request body too large, at most 10 MiB"))
    );
    assert_eq!(subscriber(&h, "big").await.0, 404);
    assert_eq!(h.scalar("SELECT COUNT(*) FROM subscribers").await, 5);
    h.server.stop().await;
}

/// A `{username}` or `{id}` segment that cannot be one — percent-encoded bytes that are not
/// UTF-8, control characters (a NUL, which PostgreSQL would refuse), too long — is a JSON
/// 400 naming the segment, on GET as on PUT; never axum's plain-text rejection, never a
/// 500. Only after the role check.
async fn bad_path_segments_are_a_json_400(b: Backend) {
    let h = Harness::start(b).await;
    let not_utf8 = bad("invalid username, must be percent-encoded UTF-8");
    let bad_name = bad("invalid username, must be 1 to 253 bytes without control characters");
    let bad_id = bad("invalid reseller id, must be a positive integer");
    let long = "u".repeat(254);
    for (segment, username_error) in [
        ("%FF", &not_utf8),
        ("%C3%28", &not_utf8),
        ("ok%80", &not_utf8),
        ("%00", &bad_name),
        ("a%07b", &bad_name),
        (long.as_str(), &bad_name),
    ] {
        let (code, v) = subscriber(&h, segment).await;
        assert_eq!((code, &v), (400, username_error), "GET {segment}");
        let (code, v) = put(
            &h,
            &format!("/api/subscribers/{segment}"),
            r#"{"reseller_id": null}"#,
        )
        .await;
        assert_eq!((code, &v), (400, username_error), "PUT {segment}");
        let (code, v) = put(
            &h,
            &format!("/api/resellers/{segment}"),
            r#"{"parent_id": null}"#,
        )
        .await;
        assert_eq!((code, v), (400, bad_id.clone()), "PUT reseller {segment}");
        // Not an admin: 403 before the segment is looked at.
        let reseller = token("reseller", Some(1), None, &["sessions.view"]);
        let (code, v) = api_json(&h, &format!("/api/subscribers/{segment}"), Some(&reseller)).await;
        assert_eq!((code, v), (403, bad("not authorized")), "{segment}");
    }
    // A valid name that is not stored is still a 404.
    let (code, v) = subscriber(&h, "nobody%20here").await;
    assert_eq!((code, v), (404, bad("subscriber not found")));
    h.server.stop().await;
}
