//! The Sessions API contract for list, count, active and get: parameters, defaults,
//! limits, messages, authentication and reseller scoping, on both backends.

use std::time::Duration;

use radacctd::api::AppState;
use serde_json::Value;

use crate::both_backends;
use crate::harness::{
    Acct, Backend, Harness, admin_token, api_json, now, oneshot, seed_reseller_tree, token,
};

both_backends!(
    list_defaults_to_active_sessions_with_contract_shape,
    closed_and_all_come_from_the_database_with_filters_sort_and_pages,
    every_bad_parameter_is_a_400_with_a_precise_message,
    authentication_failures_are_401_and_missing_permission_403,
    reseller_sees_only_its_subtree_everywhere,
    subscriber_sees_only_its_own_sessions,
    get_by_id_answers_open_and_closed_sessions,
    hostile_parameters_and_tokens_never_cause_a_500,
    undecodable_path_ids_get_the_json_errors,
    search_folds_ascii_case_only_on_active_and_stored_sessions,
    no_configured_key_is_401_authentication_is_not_configured,
    output_octets_and_session_time_sorts_order_active_and_closed,
    subscriber_asking_for_another_users_session_gets_403,
);

const VIEW: &[&str] = &["sessions.view"];

/// Sessions for the seeded subscribers: r1user..r4user and nobody open, plus two closed.
async fn traffic(h: &Harness) -> u32 {
    let t0 = now() - 250;
    for (i, u) in ["r1user", "r2user", "r3user", "r4user", "nobody"]
        .iter()
        .enumerate()
    {
        let i = i as u32;
        h.client
            .send(
                &Acct::start(u, &format!("{i}"))
                    .at(t0 + i)
                    .framed_ip([10, 0, 0, i as u8 + 1]),
            )
            .await;
        h.client
            .send(
                &Acct::interim(u, &format!("{i}"))
                    .at(t0 + 100)
                    .time(100 - i)
                    .octets(1000 * u64::from(i + 1), 10),
            )
            .await;
    }
    for (u, sid) in [("r2user", "c1"), ("r4user", "c2")] {
        h.client.send(&Acct::start(u, sid).at(t0)).await;
        h.client
            .send(
                &Acct::stop(u, sid)
                    .at(t0 + 60)
                    .time(60)
                    .octets(7, 8)
                    .cause(1),
            )
            .await;
    }
    t0
}

fn usernames(v: &Value) -> Vec<String> {
    let mut u: Vec<String> = v["data"]
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|s| s["username"].as_str().unwrap_or_default().to_owned())
        .collect();
    u.sort();
    u
}

async fn list_defaults_to_active_sessions_with_contract_shape(b: Backend) {
    let h = Harness::start(b).await;
    seed_reseller_tree(h.store()).await;
    let t0 = traffic(&h).await;
    let (status, v) = api_json(&h, "/api/sessions", Some(&admin_token())).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["success"], true);
    assert_eq!(
        v["pagination"],
        serde_json::json!({"page": 1, "limit": 50, "total": 5})
    );
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 5);
    // Default sort: acctstarttime desc.
    assert_eq!(data[0]["username"], "nobody");
    assert_eq!(data[4]["username"], "r1user");
    let s = &data[4];
    for field in [
        "radacctid",
        "username",
        "acctsessionid",
        "nasipaddress",
        "nas_id",
        "nasportid",
        "framedipaddress",
        "callingstationid",
        "acctstarttime",
        "acctstoptime",
        "acctupdatetime",
        "acctinputoctets",
        "acctoutputoctets",
        "acctsessiontime",
        "acctterminatecause",
    ] {
        assert!(s.get(field).is_some(), "field {field} missing in {s}");
    }
    assert_eq!(s["acctstoptime"], Value::Null);
    assert_eq!(s["acctterminatecause"], Value::Null);
    assert_eq!(s["nasipaddress"], "127.0.0.1");
    assert_eq!(s["framedipaddress"], "10.0.0.1");
    assert_eq!(s["acctinputoctets"], 1000);
    assert_eq!(s["acctsessiontime"], 100);
    assert_eq!(
        s["acctstarttime"],
        radacctd::api::params::rfc3339(i64::from(t0))
    );
    assert!(s["acctstarttime"].as_str().unwrap().ends_with('Z'));
    assert!(s["nas_id"].as_i64().is_some());

    let (_, c) = api_json(&h, "/api/sessions/count", Some(&admin_token())).await;
    assert_eq!(c, serde_json::json!({"success": true, "count": 5}));

    // Paging, sort by octets asc, search, nas_id.
    let (_, v) = api_json(
        &h,
        "/api/sessions?limit=2&page=2&sort=acctinputoctets&order=asc",
        Some(&admin_token()),
    )
    .await;
    assert_eq!(
        v["pagination"],
        serde_json::json!({"page": 2, "limit": 2, "total": 5})
    );
    let got: Vec<_> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["username"].clone())
        .collect();
    assert_eq!(got, ["r3user", "r4user"]);
    let (_, v) = api_json(&h, "/api/sessions?search=R2USER", Some(&admin_token())).await;
    assert_eq!(usernames(&v), ["r2user"]);
    let (_, v) = api_json(&h, "/api/sessions?search=10.0.0.3", Some(&admin_token())).await;
    assert_eq!(usernames(&v), ["r3user"]);
    let (_, v) = api_json(&h, "/api/sessions?search=F8:B4", Some(&admin_token())).await;
    assert_eq!(v["pagination"]["total"], 5, "calling-station-id search");
    let (_, v) = api_json(&h, "/api/sessions?nas_id=999", Some(&admin_token())).await;
    assert_eq!(v["pagination"]["total"], 0);
    let nas_id = s["nas_id"].as_i64().unwrap();
    let (_, v) = api_json(
        &h,
        &format!("/api/sessions?nas_id={nas_id}"),
        Some(&admin_token()),
    )
    .await;
    assert_eq!(v["pagination"]["total"], 5);
    let from = radacctd::api::params::rfc3339(i64::from(t0 + 2));
    let (_, v) = api_json(
        &h,
        &format!("/api/sessions?from={from}"),
        Some(&admin_token()),
    )
    .await;
    assert_eq!(usernames(&v), ["nobody", "r3user", "r4user"]);

    // /active: a bare array in scope.
    let (status, body, headers) = oneshot(
        &h,
        "GET",
        "/api/sessions/active",
        Some(&admin_token()),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    let arr: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(arr.as_array().unwrap().len(), 5);
    h.server.stop().await;
}

async fn closed_and_all_come_from_the_database_with_filters_sort_and_pages(b: Backend) {
    let h = Harness::start(b).await;
    seed_reseller_tree(h.store()).await;
    let t0 = traffic(&h).await;
    let admin = admin_token();
    let (_, v) = api_json(&h, "/api/sessions?status=closed", Some(&admin)).await;
    assert_eq!(v["pagination"]["total"], 2, "{v}");
    assert_eq!(usernames(&v), ["r2user", "r4user"]);
    let closed = &v["data"][0];
    assert_eq!(closed["acctterminatecause"], "User-Request");
    assert_eq!(
        closed["acctstoptime"],
        radacctd::api::params::rfc3339(i64::from(t0 + 60))
    );
    assert_eq!(closed["acctinputoctets"], 7);
    let (_, v) = api_json(&h, "/api/sessions?status=all&limit=3", Some(&admin)).await;
    assert_eq!(v["pagination"]["total"], 7);
    assert_eq!(v["data"].as_array().unwrap().len(), 3);
    let (_, v) = api_json(
        &h,
        "/api/sessions?status=all&sort=acctinputoctets&order=desc&limit=1",
        Some(&admin),
    )
    .await;
    assert_eq!(
        v["data"][0]["username"], "nobody",
        "largest input octets first"
    );
    let (_, v) = api_json(
        &h,
        "/api/sessions?status=ALL&search=r4&order=ASC",
        Some(&admin),
    )
    .await;
    assert_eq!(v["pagination"]["total"], 2);
    let to = radacctd::api::params::rfc3339(i64::from(t0));
    let (_, v) = api_json(
        &h,
        &format!("/api/sessions?status=all&to={to}"),
        Some(&admin),
    )
    .await;
    assert_eq!(
        v["pagination"]["total"], 3,
        "r1user + the two closed started at t0: {v}"
    );
    // A search full of LIKE wildcards matches literally, not everything.
    let (_, v) = api_json(&h, "/api/sessions?status=all&search=%25_", Some(&admin)).await;
    assert_eq!(v["pagination"]["total"], 0);
    // Beyond the last page: empty data, correct total.
    let (_, v) = api_json(&h, "/api/sessions?status=closed&page=9", Some(&admin)).await;
    assert_eq!(v["data"], serde_json::json!([]));
    assert_eq!(v["pagination"]["total"], 2);
    h.server.stop().await;
}

async fn every_bad_parameter_is_a_400_with_a_precise_message(b: Backend) {
    let h = Harness::start(b).await;
    let admin = admin_token();
    for (q, msg) in [
        ("status=open", "invalid status, must be active/closed/all"),
        ("page=0", "invalid page, must be a positive integer"),
        ("page=abc", "invalid page, must be a positive integer"),
        ("limit=0", "invalid limit, must be between 1 and 500"),
        ("limit=501", "invalid limit, must be between 1 and 500"),
        ("nas_id=x", "invalid nas_id, must be an integer"),
        (
            "from=nope",
            "invalid from, must be an ISO 8601 datetime such as 2026-05-01T00:00:00Z",
        ),
        (
            "to=2026-99-99",
            "invalid to, must be an ISO 8601 datetime such as 2026-05-01T00:00:00Z",
        ),
        (
            "from=2026-05-02&to=2026-05-01",
            "invalid range, from must not be after to",
        ),
        (
            "sort=username",
            "invalid sort, must be one of acctstarttime, acctinputoctets, acctoutputoctets, acctsessiontime",
        ),
        ("order=sideways", "invalid order, must be asc/desc"),
    ] {
        for status in ["", "&status=closed"] {
            let q = if q.starts_with("status") {
                q.to_owned()
            } else {
                format!("{q}{status}")
            };
            let (code, v) = api_json(&h, &format!("/api/sessions?{q}"), Some(&admin)).await;
            assert_eq!(code, 400, "{q}: {v}");
            assert_eq!(
                v,
                serde_json::json!({"success": false, "message": msg}),
                "{q}"
            );
        }
    }
    let (code, v) = api_json(&h, "/api/nope", Some(&admin)).await;
    assert_eq!(
        (code, v),
        (
            404,
            serde_json::json!({"success": false, "message": "not found"})
        )
    );
    let (code, body, headers) = oneshot(&h, "PATCH", "/api/sessions", Some(&admin), None).await;
    assert_eq!(code, 405);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        serde_json::json!({"success": false, "message": "method not allowed"})
    );
    h.server.stop().await;
}

async fn authentication_failures_are_401_and_missing_permission_403(b: Backend) {
    let h = Harness::start(b).await;
    for uri in [
        "/api/sessions",
        "/api/sessions/count",
        "/api/sessions/active",
        "/api/sessions/1",
    ] {
        let (code, v) = api_json(&h, uri, None).await;
        assert_eq!(
            (code, v["message"].as_str()),
            (401, Some("missing token")),
            "{uri}"
        );
        let (code, v) = api_json(&h, uri, Some("not.a.jwt")).await;
        assert_eq!(
            (code, v["message"].as_str()),
            (401, Some("invalid token")),
            "{uri}"
        );
        let no_view = token("reseller", Some(1), None, &["subscribers.disconnect"]);
        let (code, v) = api_json(&h, uri, Some(&no_view)).await;
        assert_eq!(code, 403, "{uri}: {v}");
        assert_eq!(v["message"], "sessions.view denied");
    }
    // Expired, wrong key, alg none, HS256 signed with another secret.
    use radacctd::api::auth::{Claims, Role, mint_hs256, now_secs};
    let mut c = Claims {
        sub: "x".into(),
        role: Role::Admin,
        reseller_id: None,
        username: None,
        permissions: vec![],
        exp: now_secs() - 120,
        iat: None,
        aud: None,
        iss: None,
    };
    let expired = mint_hs256(crate::harness::JWT_SECRET, &c).unwrap();
    let (code, v) = api_json(&h, "/api/sessions", Some(&expired)).await;
    assert_eq!((code, v["message"].as_str()), (401, Some("token expired")));
    c.exp = now_secs() + 600;
    let wrong = mint_hs256("another-secret", &c).unwrap();
    assert_eq!(api_json(&h, "/api/sessions", Some(&wrong)).await.0, 401);
    let payload = wrong.split('.').nth(1).unwrap();
    let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    assert_eq!(api_json(&h, "/api/sessions", Some(&none)).await.0, 401);
    // A lower-case scheme is accepted; Basic is not, even around a valid token.
    let state = state_of(&h);
    let (code, body, _) = call(
        state.clone(),
        "GET",
        "/api/sessions/count",
        Some(&format!("bearer {}", admin_token())),
    )
    .await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    for basic in [
        "Basic YWRtaW46cGFzc3dvcmQ=".to_owned(),
        format!("Basic {}", admin_token()),
    ] {
        let (code, body, headers) =
            call(state.clone(), "GET", "/api/sessions/count", Some(&basic)).await;
        assert_eq!(code, 401, "{basic}");
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap(),
            serde_json::json!({"success": false, "message": "missing token"})
        );
        assert_eq!(headers["www-authenticate"], "Bearer");
    }
    h.server.stop().await;
}

async fn reseller_sees_only_its_subtree_everywhere(b: Backend) {
    let h = Harness::start(b).await;
    seed_reseller_tree(h.store()).await;
    traffic(&h).await;
    let r2 = token("reseller", Some(2), None, VIEW);
    let (_, v) = api_json(&h, "/api/sessions", Some(&r2)).await;
    assert_eq!(
        usernames(&v),
        ["r2user", "r3user"],
        "subtree of 2 is 2 and 3"
    );
    assert_eq!(v["pagination"]["total"], 2);
    let (_, v) = api_json(&h, "/api/sessions/count", Some(&r2)).await;
    assert_eq!(v["count"], 2);
    let (_, v) = api_json(&h, "/api/sessions?status=all", Some(&r2)).await;
    assert_eq!(usernames(&v), ["r2user", "r2user", "r3user"]);
    let (_, body, _) = oneshot(&h, "GET", "/api/sessions/active", Some(&r2), None).await;
    let arr: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(arr.as_array().unwrap().len(), 2);
    let r1 = token("reseller", Some(1), None, VIEW);
    let (_, v) = api_json(&h, "/api/sessions/count", Some(&r1)).await;
    assert_eq!(
        v["count"], 4,
        "1 sees 1,2,3,4 but not subscribers without a reseller"
    );
    // Outside the scope: 403 not authorized on get.
    let (_, all) = api_json(
        &h,
        "/api/sessions?status=all&limit=500",
        Some(&admin_token()),
    )
    .await;
    let id_of = |u: &str| {
        all["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["username"] == u)
            .unwrap()["radacctid"]
            .as_i64()
            .unwrap()
    };
    let (code, v) = api_json(&h, &format!("/api/sessions/{}", id_of("r4user")), Some(&r2)).await;
    assert_eq!((code, v["message"].as_str()), (403, Some("not authorized")));
    let (code, _) = api_json(&h, &format!("/api/sessions/{}", id_of("r3user")), Some(&r2)).await;
    assert_eq!(code, 200);
    // sessions.view_all lifts the scope.
    let r2_all = token(
        "reseller",
        Some(2),
        None,
        &["sessions.view", "sessions.view_all"],
    );
    let (_, v) = api_json(&h, "/api/sessions/count", Some(&r2_all)).await;
    assert_eq!(v["count"], 5);
    // A cycle in the tree does not hang scope resolution.
    h.store().upsert_reseller(1, Some(3), "top").await.unwrap();
    let (code, v) = api_json(&h, "/api/sessions/count", Some(&r2)).await;
    assert_eq!(
        (code, v["count"].as_i64()),
        (200, Some(4)),
        "2→3→1→{{2,4}}: {v}"
    );
    h.server.stop().await;
}

async fn subscriber_sees_only_its_own_sessions(b: Backend) {
    let h = Harness::start(b).await;
    seed_reseller_tree(h.store()).await;
    traffic(&h).await;
    let me = token("subscriber", None, Some("r4user"), VIEW);
    let (_, v) = api_json(&h, "/api/sessions?status=all", Some(&me)).await;
    assert_eq!(usernames(&v), ["r4user", "r4user"]);
    let (_, v) = api_json(&h, "/api/sessions/count", Some(&me)).await;
    assert_eq!(v["count"], 1);
    let (_, v) = api_json(&h, "/api/sessions?search=r1user", Some(&me)).await;
    assert_eq!(v["pagination"]["total"], 0);
    h.server.stop().await;
}

async fn get_by_id_answers_open_and_closed_sessions(b: Backend) {
    let h = Harness::start(b).await;
    let t0 = now() - 100;
    h.client.send(&Acct::start("g1", "1").at(t0)).await;
    h.client.send(&Acct::start("g2", "2").at(t0)).await;
    h.client
        .send(&Acct::stop("g2", "2").at(t0 + 5).time(5).cause(1))
        .await;
    let admin = admin_token();
    let (_, all) = api_json(&h, "/api/sessions?status=all", Some(&admin)).await;
    for s in all["data"].as_array().unwrap() {
        let (code, v) = api_json(
            &h,
            &format!("/api/sessions/{}", s["radacctid"]),
            Some(&admin),
        )
        .await;
        assert_eq!(code, 200);
        assert_eq!(v["success"], true);
        assert_eq!(&v["data"], s);
    }
    for bad in ["999999", "abc", "-1", "1.5"] {
        let (code, v) = api_json(&h, &format!("/api/sessions/{bad}"), Some(&admin)).await;
        assert_eq!(code, 404, "{bad}");
        assert_eq!(
            v,
            serde_json::json!({"success": false, "message": "session not found"})
        );
    }
    h.server.stop().await;
}

async fn hostile_parameters_and_tokens_never_cause_a_500(b: Backend) {
    let h = Harness::start(b).await;
    h.client
        .send(&Acct::start("f'\"\\%_x", "1").at(now() - 5))
        .await;
    let admin = admin_token();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let pieces = [
        "status=",
        "closed",
        "all",
        "active",
        "page=",
        "limit=",
        "search=",
        "nas_id=",
        "from=",
        "to=",
        "sort=",
        "order=",
        "%00",
        "%FF",
        "%27",
        "'",
        ";DROP TABLE radacct",
        "%25",
        "_",
        "-1",
        "99999999999999999999",
        "1e9",
        "2026-05-01T00:00:00Z",
        "&",
        "=",
        "desc",
        "asc",
        "acctinputoctets",
        "%E2%80%AE",
        "\\",
    ];
    let (_, v) = api_json(&h, "/api/sessions", Some(&admin)).await;
    let id = v["data"][0]["radacctid"].as_i64().unwrap();
    let logs = format!("/api/sessions/{id}/logs");
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..300 {
        let mut q = String::new();
        for _ in 0..(next() % 7) {
            q.push_str(pieces[(next() % pieces.len() as u64) as usize]);
        }
        for path in [
            "/api/sessions",
            "/api/sessions/count",
            "/api/sessions/export",
            "/api/sessions/stats",
            logs.as_str(),
        ] {
            let uri = format!("{path}?{}", q.replace(' ', "%20"));
            let Ok(uri) = uri.parse::<axum::http::Uri>() else {
                continue;
            };
            let (code, body, headers) =
                oneshot(&h, "GET", &uri.to_string(), Some(&admin), None).await;
            if code == 200 {
                // CSV and text bodies have no envelope; the JSON ones succeed.
                if headers["content-type"] == "application/json" {
                    let v: Value = serde_json::from_slice(&body).unwrap();
                    assert_eq!(v["success"], true, "{uri}");
                }
            } else {
                assert_eq!(code, 400, "{uri}: {}", String::from_utf8_lossy(&body));
                assert_json_error(&uri.to_string(), code, &body, &headers);
            }
        }
    }

    // Random bytes, percent-encoded, as the path segment of every route that has one.
    let disconnector = token(
        "subscriber",
        None,
        Some("someone-else"),
        &["sessions.view", "subscribers.disconnect"],
    );
    for _ in 0..150 {
        let mut segment = String::new();
        for _ in 0..(next() % 6 + 1) {
            let byte = (next() % 256) as u8;
            if byte.is_ascii_alphanumeric() && next() % 2 == 0 {
                segment.push(char::from(byte));
            } else {
                segment.push_str(&format!("%{byte:02X}"));
            }
        }
        let reseller = Some(("application/json", br#"{"parent_id": null}"#.to_vec()));
        let subscriber = Some(("application/json", br#"{"reseller_id": null}"#.to_vec()));
        for (method, uri, tok, body) in [
            ("GET", format!("/api/sessions/{segment}"), &admin, None),
            ("GET", format!("/api/sessions/{segment}/logs"), &admin, None),
            (
                "POST",
                format!("/api/sessions/{segment}/disconnect"),
                &disconnector,
                None,
            ),
            (
                "DELETE",
                format!("/api/sessions/{segment}"),
                &disconnector,
                None,
            ),
            ("GET", format!("/api/subscribers/{segment}"), &admin, None),
            (
                "PUT",
                format!("/api/subscribers/{segment}"),
                &admin,
                subscriber,
            ),
            (
                "PUT",
                format!("/api/resellers/{segment}"),
                &admin,
                reseller.clone(),
            ),
        ] {
            let (code, bytes, headers) = oneshot(&h, method, &uri, Some(tok), body).await;
            let what = format!("{method} {uri}");
            if code != 200 {
                assert_json_error(&what, code, &bytes, &headers);
                assert!(
                    [400, 403, 404].contains(&code),
                    "{what}: {code} {}",
                    String::from_utf8_lossy(&bytes)
                );
            }
        }
    }

    for tok in [
        "",
        " ",
        "a.b",
        "a.b.c.d",
        "....",
        &"x".repeat(10_000),
        "eyJhbGciOiJIUzI1NiJ9.e30.",
        "Bearer Bearer",
    ] {
        let (code, _) = api_json(&h, "/api/sessions", Some(tok)).await;
        assert_eq!(code, 401, "{tok:.40}");
    }

    // Tokens signed with the real secret but with a header or claims the verifier must
    // refuse, tokens cut short or extended, and random mutations of a valid one.
    let valid_claims = serde_json::json!({
        "sub": "fuzz", "role": "admin", "permissions": [], "exp": radacctd::api::auth::now_secs() + 600,
    });
    let mut refused: Vec<String> = Vec::new();
    for alg in [
        serde_json::json!("none"),
        serde_json::json!("None"),
        serde_json::json!("nOnE"),
        serde_json::json!("HS384"),
        serde_json::json!("HS512"),
        serde_json::json!("RS256"),
        serde_json::json!("ES256"),
        serde_json::json!("PS256"),
        serde_json::json!("EdDSA"),
        serde_json::json!(""),
        serde_json::json!("hs256"),
        serde_json::json!("HS256 "),
        serde_json::json!(256),
        serde_json::json!(null),
        serde_json::json!(["HS256"]),
        serde_json::json!({ "alg": "HS256" }),
    ] {
        refused.push(signed(
            &serde_json::json!({ "alg": alg, "typ": "JWT" }).to_string(),
            &valid_claims.to_string(),
        ));
    }
    refused.push(signed(r#"{"typ":"JWT"}"#, &valid_claims.to_string()));
    refused.push(signed("not json", &valid_claims.to_string()));
    refused.push(signed(r#"{"alg":"HS256"#, &valid_claims.to_string()));
    for (field, value) in [
        ("role", serde_json::json!(5)),
        ("role", serde_json::json!("root")),
        ("role", serde_json::json!("ADMIN")),
        ("role", serde_json::json!(null)),
        ("exp", serde_json::json!("tomorrow")),
        ("exp", serde_json::json!(-1)),
        ("exp", serde_json::json!(1e30)),
        ("exp", serde_json::json!(null)),
        ("sub", serde_json::json!(null)),
        ("sub", serde_json::json!(["a"])),
        ("permissions", serde_json::json!("sessions.view")),
        ("permissions", serde_json::json!([1, 2])),
        ("reseller_id", serde_json::json!("2")),
        ("username", serde_json::json!(42)),
        ("aud", serde_json::json!(5)),
        ("iat", serde_json::json!("now")),
        ("iss", serde_json::json!({})),
    ] {
        let mut c = valid_claims.clone();
        c[field] = value;
        refused.push(signed(r#"{"alg":"HS256","typ":"JWT"}"#, &c.to_string()));
    }
    let mut c = valid_claims.clone();
    c.as_object_mut().unwrap().remove("exp");
    refused.push(signed(r#"{"alg":"HS256","typ":"JWT"}"#, &c.to_string()));
    let mut c = valid_claims.clone();
    c["role"] = serde_json::json!("subscriber");
    refused.push(signed(r#"{"alg":"HS256","typ":"JWT"}"#, &c.to_string()));
    for payload in ["[]", "null", "\"x\"", "{", "", "{\"sub\":\"a\"}"] {
        refused.push(signed(r#"{"alg":"HS256","typ":"JWT"}"#, payload));
    }
    let good = signed(r#"{"alg":"HS256","typ":"JWT"}"#, &valid_claims.to_string());
    assert_eq!(
        api_json(&h, "/api/sessions/count", Some(&good)).await.0,
        200
    );
    let parts: Vec<&str> = good.split('.').collect();
    refused.extend([
        parts[0].to_owned(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{}.{}.", parts[0], parts[1]),
        format!("{good}.{}", parts[2]),
        format!("{good}."),
        format!(".{good}"),
        format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            &parts[2][..parts[2].len() - 2]
        ),
        format!("{}..{}", parts[0], parts[2]),
        format!("{}.{}.{}", parts[1], parts[0], parts[2]),
        format!("{good} {good}"),
        good.replace('.', ".."),
        format!("{}={}", &good[..10], &good[10..]),
    ]);
    for tok in &refused {
        for uri in [
            "/api/sessions",
            "/api/sessions/export",
            "/api/sessions/1/logs",
        ] {
            let (code, body, headers) = oneshot(&h, "GET", uri, Some(tok), None).await;
            assert_json_error(&format!("{uri} with {tok:.80}"), code, &body, &headers);
            assert_eq!(code, 401, "{uri} with {tok:.80}");
        }
    }
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/%";
    for _ in 0..300 {
        let mut tok = good.clone().into_bytes();
        for _ in 0..(next() % 3 + 1) {
            let at = (next() % tok.len() as u64) as usize;
            match next() % 3 {
                0 => tok[at] = alphabet[(next() % alphabet.len() as u64) as usize],
                1 => {
                    tok.remove(at);
                }
                _ => tok.insert(at, alphabet[(next() % alphabet.len() as u64) as usize]),
            }
        }
        let tok = String::from_utf8(tok).unwrap();
        let (code, body, headers) =
            oneshot(&h, "GET", "/api/sessions/count", Some(&tok), None).await;
        if code != 200 {
            assert_json_error(&tok, code, &body, &headers);
            assert_eq!(code, 401, "{tok}");
        }
    }
    h.server.stop().await;
}

/// RFC 4648 §5 base64url without padding, as JWTs use it.
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// A JWT with exactly this header and payload text, HS256-signed with the test secret (so
/// only the header or claims can make it fail).
fn signed(header: &str, payload: &str) -> String {
    use hmac::{Hmac, Mac};
    let input = format!(
        "{}.{}",
        b64url(header.as_bytes()),
        b64url(payload.as_bytes())
    );
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(crate::harness::JWT_SECRET.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", b64url(&mac.finalize().into_bytes()))
}

/// Real HTTP: a session started with radclient appears in the API within a second, and the
/// rate limit answers 429 with Retry-After past 300 requests a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_from_radclient_appear_over_real_http_and_the_rate_limit_applies() {
    let h = Harness::start(Backend::Sqlite).await;
    let attrs = format!(
        "Acct-Status-Type = Start\nUser-Name = \"realhttp\"\nAcct-Session-Id = \"99\"\n\
         NAS-IP-Address = 127.0.0.1\nEvent-Timestamp = {}\n",
        now()
    );
    let (ok, out) =
        crate::harness::radclient(h.server.radius_addr, "acct", crate::harness::SECRET, &attrs)
            .await;
    assert!(ok, "{out}");
    let client = reqwest::Client::new();
    let url = format!("http://{}/api/sessions?search=realhttp", h.server.http_addr);
    let started = std::time::Instant::now();
    let v: Value = client
        .get(&url)
        .bearer_auth(admin_token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["pagination"]["total"], 1, "{v}");
    assert!(started.elapsed() < Duration::from_secs(1));
    let mut limited = None;
    for i in 0..400 {
        let r = client
            .get(format!("http://{}/api/sessions/count", h.server.http_addr))
            .bearer_auth(admin_token())
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            limited = Some((
                i,
                r.headers().get("retry-after").cloned(),
                r.json::<Value>().await.unwrap(),
            ));
            break;
        }
    }
    let (i, retry, body) = limited.expect("no 429 within 400 requests");
    // 300 per sliding minute, counting the few requests made above: the 301st within the
    // minute is refused, however fast or slow the loop runs.
    assert!((290..=300).contains(&i), "limited after {} requests", i + 1);
    assert!(retry.is_some(), "Retry-After header");
    assert_eq!(
        body,
        serde_json::json!({"success": false, "message": "rate limit exceeded"})
    );
    // Health and metrics are not rate-limited.
    let r = client
        .get(format!("http://{}/healthz", h.server.http_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    h.server.stop().await;
}

/// Hostile HTTP clients: connections that never finish their headers do not block others,
/// and oversized query strings are refused cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_and_oversized_queries_do_not_hurt_the_api() {
    use tokio::io::AsyncWriteExt;
    let h = Harness::start(Backend::Sqlite).await;
    let mut stalled = Vec::new();
    for _ in 0..64 {
        let mut s = tokio::net::TcpStream::connect(h.server.http_addr)
            .await
            .unwrap();
        s.write_all(b"GET /api/sessions HTTP/1.1\r\nHost: x\r\nAuthor")
            .await
            .unwrap();
        stalled.push(s);
    }
    let client = reqwest::Client::new();
    let started = std::time::Instant::now();
    let r = client
        .get(format!("http://{}/api/sessions/count", h.server.http_addr))
        .bearer_auth(admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "blocked by stalled clients"
    );
    let long = "x".repeat(300);
    let r = client
        .get(format!(
            "http://{}/api/sessions?search={long}",
            h.server.http_addr
        ))
        .bearer_auth(admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["message"],
        "invalid search, must be at most 253 characters"
    );
    let huge = "y".repeat(200_000);
    let r = client
        .get(format!(
            "http://{}/api/sessions?foo={huge}",
            h.server.http_addr
        ))
        .bearer_auth(admin_token())
        .send()
        .await;
    if let Ok(r) = r {
        assert!(r.status().is_client_error(), "{}", r.status());
    }
    let r = client
        .get(format!("http://{}/healthz", h.server.http_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "still serving");
    drop(stalled);
    h.server.stop().await;
}

/// The server's API state with the rate limit off (in-process requests share one bucket),
/// for requests `oneshot` cannot make: a raw `Authorization` header, a changed state.
fn state_of(h: &Harness) -> AppState {
    let mut state = h.server.api.clone();
    state.limiter = std::sync::Arc::new(radacctd::api::ratelimit::RateLimiter::new(0, vec![]));
    state
}

/// One request through a router built on `state`, with `authorization` sent verbatim.
async fn call(
    state: AppState,
    method: &str,
    uri: &str,
    authorization: Option<&str>,
) -> (u16, Vec<u8>, axum::http::HeaderMap) {
    let mut req = axum::http::Request::builder().method(method).uri(uri);
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let req = req.body(axum::body::Body::empty()).unwrap();
    crate::harness::route(state, req).await
}

/// An error answer in the contract's shape: JSON, `success: false`, a non-empty message.
fn assert_json_error(what: &str, code: u16, body: &[u8], headers: &axum::http::HeaderMap) {
    assert!(code >= 400, "{what}: {code}");
    assert_ne!(code, 500, "{what}: {}", String::from_utf8_lossy(body));
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "{what}: {code} {}",
        String::from_utf8_lossy(body)
    );
    let v: Value = serde_json::from_slice(body).unwrap_or_else(|_| {
        panic!(
            "{what}: {code} body is not JSON: {}",
            String::from_utf8_lossy(body)
        )
    });
    assert_eq!(v["success"], false, "{what}: {v}");
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {v}"
    );
}

/// Percent-encoded bytes that are not UTF-8 (`%FF`) in a session id are a 404 `session not
/// found` like any other id that names no session, never axum's plain-text rejection. The
/// token and permission are still checked first.
async fn undecodable_path_ids_get_the_json_errors(b: Backend) {
    let h = Harness::start(b).await;
    let admin = admin_token();
    let not_found = serde_json::json!({"success": false, "message": "session not found"});
    for id in ["%FF", "%C3%28", "abc%FFdef", "%ED%A0%80", "%80"] {
        for (method, uri) in [
            ("GET", format!("/api/sessions/{id}")),
            ("GET", format!("/api/sessions/{id}/logs")),
            ("GET", format!("/api/sessions/{id}/logs?format=text")),
            ("POST", format!("/api/sessions/{id}/disconnect")),
            ("DELETE", format!("/api/sessions/{id}")),
        ] {
            let (code, body, headers) = oneshot(&h, method, &uri, Some(&admin), None).await;
            assert_json_error(&format!("{method} {uri}"), code, &body, &headers);
            assert_eq!(
                (code, serde_json::from_slice::<Value>(&body).unwrap()),
                (404, not_found.clone()),
                "{method} {uri}"
            );
            // 401 before the path is looked at, 403 before it too.
            let (code, body, headers) = oneshot(&h, method, &uri, None, None).await;
            assert_json_error(&uri, code, &body, &headers);
            assert_eq!(code, 401);
            let nobody = token("reseller", Some(1), None, &[]);
            let (code, body, headers) = oneshot(&h, method, &uri, Some(&nobody), None).await;
            assert_json_error(&uri, code, &body, &headers);
            assert_eq!(code, 403, "{method} {uri}");
        }
    }
    h.server.stop().await;
}

/// The in-memory search of open sessions folds ASCII letters only, as SQLite's `LIKE`
/// does for stored ones: `änne` does not find `ÄNNE`, `box` finds `BOX`.
async fn search_folds_ascii_case_only_on_active_and_stored_sessions(b: Backend) {
    let h = Harness::start(b).await;
    let t0 = now() - 100;
    h.client.send(&Acct::start("ÄNNE-BOX", "1").at(t0)).await;
    h.client
        .send(&Acct::stop("ÄNNE-OLD", "2").at(t0 + 5).time(5).cause(1))
        .await;
    let admin = admin_token();
    let total = |v: &Value| v["pagination"]["total"].as_i64().unwrap();
    let search = |status: &'static str, needle: &'static str| {
        let h = &h;
        let admin = &admin;
        async move {
            let (code, v) = api_json(
                h,
                &format!("/api/sessions?status={status}&search={needle}"),
                Some(admin),
            )
            .await;
            assert_eq!(code, 200, "{v}");
            v
        }
    };
    // ASCII letters fold both ways, next to non-ASCII ones.
    assert_eq!(total(&search("active", "%C3%84nne-box").await), 1);
    assert_eq!(total(&search("active", "%C3%84NNE-BOX").await), 1);
    assert_eq!(total(&search("all", "%C3%84nne").await), 2);
    assert_eq!(total(&search("closed", "-old").await), 1);
    // Non-ASCII letters do not: `änne` is not `ÄNNE` on the in-memory side.
    let v = search("active", "%C3%A4nne").await;
    assert_eq!(total(&v), 0, "{v}");
    let stored = total(&search("closed", "%C3%A4nne").await);
    match b {
        // SQLite's LIKE folds ASCII only: active and stored agree.
        Backend::Sqlite => assert_eq!(stored, 0),
        // PostgreSQL's ILIKE may fold `Ä` too, depending on the database's LC_CTYPE.
        Backend::Postgres => assert!(stored <= 1),
    }
    h.server.stop().await;
}

/// Without a JWT key every `/api` request is refused with 401 — a token cannot be checked.
async fn no_configured_key_is_401_authentication_is_not_configured(b: Backend) {
    let h = Harness::start(b).await;
    let mut state = state_of(&h);
    state.verifier = None;
    for uri in [
        "/api/sessions",
        "/api/sessions/count",
        "/api/sessions/1",
        "/api/sessions/export",
        "/api/sessions/stats",
        "/api/subscribers",
    ] {
        let bearer = format!("Bearer {}", admin_token());
        let (code, body, headers) = call(state.clone(), "GET", uri, Some(&bearer)).await;
        assert_json_error(uri, code, &body, &headers);
        assert_eq!(
            (code, serde_json::from_slice::<Value>(&body).unwrap()),
            (
                401,
                serde_json::json!({"success": false, "message": "authentication is not configured"})
            ),
            "{uri}"
        );
        assert_eq!(headers["www-authenticate"], "Bearer");
        let (code, body, _) = call(state.clone(), "GET", uri, None).await;
        assert_eq!(code, 401);
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap()["message"],
            "missing token"
        );
    }
    // The document stays public.
    let (code, _, _) = call(state, "GET", "/api/openapi.json", None).await;
    assert_eq!(code, 200);
    h.server.stop().await;
}

/// `sort=acctoutputoctets` and `sort=acctsessiontime` order by that column, both ways, on
/// open sessions (memory) and closed ones (database). The three sessions are ordered
/// differently by each column, so a sort by the wrong one cannot pass.
async fn output_octets_and_session_time_sorts_order_active_and_closed(b: Backend) {
    let h = Harness::start(b).await;
    let t0 = now() - 200;
    // (suffix, input, output, session time): start order a, b, c.
    let shapes = [
        ("a", 300, 100, 20),
        ("b", 200, 300, 10),
        ("c", 100, 200, 30),
    ];
    for (i, (s, input, output, time)) in shapes.iter().enumerate() {
        let at = t0 + i as u32;
        h.client
            .send(&Acct::start(&format!("open-{s}"), s).at(at))
            .await;
        h.client
            .send(
                &Acct::interim(&format!("open-{s}"), s)
                    .at(at + 50)
                    .time(*time)
                    .octets(*input, *output),
            )
            .await;
        h.client
            .send(&Acct::start(&format!("shut-{s}"), s).at(at))
            .await;
        h.client
            .send(
                &Acct::stop(&format!("shut-{s}"), s)
                    .at(at + time)
                    .time(*time)
                    .octets(*input, *output)
                    .cause(1),
            )
            .await;
    }
    let admin = admin_token();
    for (status, prefix) in [("active", "open"), ("closed", "shut")] {
        for (sort, desc) in [
            ("acctoutputoctets", ["b", "c", "a"]),
            ("acctsessiontime", ["c", "a", "b"]),
            ("acctinputoctets", ["a", "b", "c"]),
            ("acctstarttime", ["c", "b", "a"]),
        ] {
            for order in ["desc", "asc"] {
                let (code, v) = api_json(
                    &h,
                    &format!("/api/sessions?status={status}&sort={sort}&order={order}"),
                    Some(&admin),
                )
                .await;
                assert_eq!(code, 200, "{v}");
                let got: Vec<&str> = v["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["username"].as_str().unwrap())
                    .collect();
                let mut want: Vec<String> = desc.iter().map(|s| format!("{prefix}-{s}")).collect();
                if order == "asc" {
                    want.reverse();
                }
                assert_eq!(got, want, "status={status}&sort={sort}&order={order}");
                // One row per page walks the same order.
                let (_, v) = api_json(
                    &h,
                    &format!(
                        "/api/sessions?status={status}&sort={sort}&order={order}&limit=1&page=2"
                    ),
                    Some(&admin),
                )
                .await;
                assert_eq!(v["data"][0]["username"], want[1].as_str());
            }
        }
    }
    h.server.stop().await;
}

/// A subscriber token sees its own sessions by id and gets 403 `not authorized` for anyone
/// else's, open or closed, on get and logs alike.
async fn subscriber_asking_for_another_users_session_gets_403(b: Backend) {
    let h = Harness::start(b).await;
    seed_reseller_tree(h.store()).await;
    traffic(&h).await;
    let (_, all) = api_json(
        &h,
        "/api/sessions?status=all&limit=500",
        Some(&admin_token()),
    )
    .await;
    let me = token("subscriber", None, Some("r4user"), VIEW);
    let mut others = 0;
    for s in all["data"].as_array().unwrap() {
        let id = s["radacctid"].as_i64().unwrap();
        for uri in [
            format!("/api/sessions/{id}"),
            format!("/api/sessions/{id}/logs"),
        ] {
            let (code, v) = api_json(&h, &uri, Some(&me)).await;
            if s["username"] == "r4user" {
                assert_eq!(code, 200, "{uri}: {v}");
            } else {
                others += 1;
                assert_eq!(
                    (code, v),
                    (
                        403,
                        serde_json::json!({"success": false, "message": "not authorized"})
                    ),
                    "{uri} of {}",
                    s["username"]
                );
            }
        }
    }
    assert_eq!(others, 10, "five sessions of other users, two URIs each");
    h.server.stop().await;
}

/// A server whose `[auth]` is `auth_toml` instead of the harness's HS256 secret.
async fn server_with_auth(db: &crate::harness::TestDb, auth_toml: &str) -> radacctd::app::Server {
    let toml = format!(
        "[database]\nurl = \"{url}\"\nmax_connections = 4\n\
         [radius]\nlisten = \"127.0.0.1:0\"\ndefault_client = false\n\
         [http]\nlisten = \"127.0.0.1:0\"\n\
         [auth]\n{auth_toml}\n",
        url = db.url
    );
    let file =
        radacctd::config::FileConfig::parse(std::path::Path::new("test.toml"), &toml).unwrap();
    let config =
        radacctd::config::Config::build(file, radacctd::config::Overrides::default()).unwrap();
    radacctd::app::Server::start(config).await.unwrap()
}

/// GET over real HTTP with `Authorization: Bearer <tok>`: the status and the message.
async fn http_status(server: &radacctd::app::Server, tok: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("http://{}/api/sessions/count", server.http_addr))
        .bearer_auth(tok)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

fn jwt_fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name)
}

fn admin_claims() -> radacctd::api::auth::Claims {
    use radacctd::api::auth::{Claims, Role, now_secs};
    Claims {
        sub: "panel".into(),
        role: Role::Admin,
        reseller_id: None,
        username: None,
        permissions: vec![],
        exp: now_secs() + 600,
        iat: None,
        aud: None,
        iss: None,
    }
}

fn sign_with(alg: jsonwebtoken::Algorithm, key: &jsonwebtoken::EncodingKey) -> String {
    jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &admin_claims(), key).unwrap()
}

/// With `jwt_algorithm = "RS256"` and the public key file configured, the whole server
/// accepts tokens of the matching private key only: not another key's, not `alg: none`,
/// not an EdDSA token, not HS256 — neither with the old shared secret nor with the public
/// key's bytes as the HMAC secret (algorithm confusion).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_public_key_verification_over_http_refuses_algorithm_confusion() {
    use jsonwebtoken::{Algorithm, EncodingKey};
    use radacctd::api::auth::mint_hs256;
    let db = crate::harness::TestDb::new(Backend::Sqlite).await;
    let public = jwt_fixture("rs256-public.pem");
    let server = server_with_auth(
        &db,
        &format!(
            "jwt_algorithm = \"RS256\"\njwt_public_key_file = \"{}\"\n",
            public.display()
        ),
    )
    .await;
    let private =
        EncodingKey::from_rsa_pem(&std::fs::read(jwt_fixture("rs256-private.pem")).unwrap())
            .unwrap();
    let good = sign_with(Algorithm::RS256, &private);
    let (code, v) = http_status(&server, &good).await;
    assert_eq!((code, v["count"].as_i64()), (200, Some(0)), "{v}");

    let public_pem = std::fs::read_to_string(&public).unwrap();
    let public_b64: String = public_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let other =
        EncodingKey::from_rsa_pem(&std::fs::read(jwt_fixture("rs256-other-private.pem")).unwrap())
            .unwrap();
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let ed_key = EncodingKey::from_ed_pem(ed.serialize_pem().as_bytes()).unwrap();
    let payload = good.split('.').nth(1).unwrap();
    let mut refused = vec![
        sign_with(Algorithm::RS256, &other),
        sign_with(Algorithm::EdDSA, &ed_key),
        sign_with(Algorithm::PS256, &private),
        mint_hs256(crate::harness::JWT_SECRET, &admin_claims()).unwrap(),
        format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}."),
    ];
    for secret in [
        public_pem.as_str(),
        public_pem.trim_end(),
        public_b64.as_str(),
    ] {
        refused.push(mint_hs256(secret, &admin_claims()).unwrap());
    }
    for tok in &refused {
        let (code, v) = http_status(&server, tok).await;
        assert_eq!(
            (code, v),
            (
                401,
                serde_json::json!({"success": false, "message": "invalid token"})
            ),
            "{tok:.60}"
        );
    }
    server.stop().await;
}

/// The same with `jwt_algorithm = "EdDSA"` and an Ed25519 key pair made for the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eddsa_public_key_verification_over_http_refuses_algorithm_confusion() {
    use jsonwebtoken::{Algorithm, EncodingKey};
    use radacctd::api::auth::mint_hs256;
    let db = crate::harness::TestDb::new(Backend::Sqlite).await;
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let public = dir.path().join("ed25519-public.pem");
    let public_pem = pair.public_key_pem();
    std::fs::write(&public, &public_pem).unwrap();
    let server = server_with_auth(
        &db,
        &format!(
            "jwt_algorithm = \"EdDSA\"\njwt_public_key_file = \"{}\"\n",
            public.display()
        ),
    )
    .await;
    let key = EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).unwrap();
    let good = sign_with(Algorithm::EdDSA, &key);
    let (code, v) = http_status(&server, &good).await;
    assert_eq!((code, v["count"].as_i64()), (200, Some(0)), "{v}");

    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let other = EncodingKey::from_ed_pem(other.serialize_pem().as_bytes()).unwrap();
    let rsa = EncodingKey::from_rsa_pem(&std::fs::read(jwt_fixture("rs256-private.pem")).unwrap())
        .unwrap();
    let public_b64: String = public_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let payload = good.split('.').nth(1).unwrap();
    let mut refused = vec![
        sign_with(Algorithm::EdDSA, &other),
        sign_with(Algorithm::RS256, &rsa),
        mint_hs256(crate::harness::JWT_SECRET, &admin_claims()).unwrap(),
        format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}."),
    ];
    for secret in [
        public_pem.as_str(),
        public_pem.trim_end(),
        public_b64.as_str(),
    ] {
        refused.push(mint_hs256(secret, &admin_claims()).unwrap());
    }
    // The valid signature on a tampered payload.
    let sig = good.split('.').nth(2).unwrap();
    let header = good.split('.').next().unwrap();
    let mut tampered = admin_claims();
    tampered.sub = "eve".into();
    let tampered = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::EdDSA),
        &tampered,
        &other,
    )
    .unwrap();
    refused.push(format!(
        "{header}.{}.{sig}",
        tampered.split('.').nth(1).unwrap()
    ));
    for tok in &refused {
        let (code, v) = http_status(&server, tok).await;
        assert_eq!(
            (code, v),
            (
                401,
                serde_json::json!({"success": false, "message": "invalid token"})
            ),
            "{tok:.60}"
        );
    }
    server.stop().await;
}
