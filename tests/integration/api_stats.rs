//! `GET /api/sessions/stats` and `GET /api/sessions/:id/logs` through the router, after
//! real accounting traffic, on both backends; and the OpenAPI document.

use radacctd::radius::attr;
use serde_json::{Value, json};

use crate::both_backends;
use crate::harness::{
    Acct, Backend, Harness, RadClient, SECRET, admin_token, api_json, now, oneshot,
    seed_reseller_tree, token,
};

both_backends!(
    stats_count_sessions_active_in_the_period_within_scope,
    stats_refuse_bad_periods_and_callers_without_permission,
    logs_list_a_sessions_events_in_order_as_json_and_text,
    logs_of_unknown_or_foreign_sessions_are_refused,
);

const DAY: u32 = 86_400;

/// A second NAS on another loopback address, so that `top_nas` has two entries.
const BNG2: &str = "[[nas]]\nname = \"bng2\"\nip = \"127.0.0.2\"\nsecret = \"s3cret-nas\"\n";

fn on_bng2(a: Acct) -> Acct {
    a.without(attr::NAS_IP_ADDRESS)
        .with(attr::NAS_IP_ADDRESS, vec![127, 0, 0, 2])
}

/// A Stop for a session the server never saw, stopped `ago` seconds before arrival: no
/// Event-Timestamp, so the event time is arrival minus Acct-Delay-Time (DESIGN.md §3).
fn old_stop(user: &str, sid: &str, ago: u32, secs: u32, input: u64, output: u64) -> Acct {
    Acct::stop(user, sid)
        .without(attr::ACCT_DELAY_TIME)
        .u32(attr::ACCT_DELAY_TIME, ago)
        .time(secs)
        .octets(input, output)
}

async fn nas_id(h: &Harness, name: &str) -> i64 {
    h.store()
        .nas_list()
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.config.name == name)
        .map(|n| n.id)
        .unwrap()
}

async fn stats(h: &Harness, query: &str, tok: &str) -> Value {
    let (status, v) = api_json(h, &format!("/api/sessions/stats{query}"), Some(tok)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["success"], true);
    v["data"].clone()
}

/// The numbers only (period and since checked separately).
fn numbers(d: &Value) -> Value {
    json!([
        d["total_sessions"],
        d["active_sessions"],
        d["total_duration_hours"],
        d["unique_users"],
        d["total_input_octets"],
        d["total_output_octets"],
    ])
}

async fn stats_count_sessions_active_in_the_period_within_scope(b: Backend) {
    let h = Harness::start_with(b, BNG2).await;
    seed_reseller_tree(h.store()).await;
    let bng2 = RadClient::bound("127.0.0.2:0", h.server.radius_addr, SECRET).await;
    let t = now();
    // Open, reseller 1: counted in every period.
    h.client
        .send(&Acct::start("r1user", "a1").at(t - 100))
        .await;
    h.client
        .send(
            &Acct::interim("r1user", "a1")
                .at(t - 50)
                .time(50)
                .octets(1000, 2000),
        )
        .await;
    // Closed ten seconds ago, reseller 3.
    h.client
        .send(&Acct::start("r3user", "b1").at(t - 200))
        .await;
    h.client
        .send(
            &Acct::stop("r3user", "b1")
                .at(t - 10)
                .time(190)
                .octets(3000, 4000),
        )
        .await;
    // Open on the second NAS, reseller 4; open, reseller 3.
    bng2.send(&on_bng2(Acct::start("r4user", "c1")).at(t - 30))
        .await;
    h.client.send(&Acct::start("r3user", "d1").at(t - 20)).await;
    // Stopped two days ago (reseller 2), ten days ago (no reseller, second NAS), forty
    // days ago (reseller 3: outside every period).
    h.client
        .send(&old_stop("r2user", "e1", 2 * DAY, 3600, 5000, 6000))
        .await;
    bng2.send(&on_bng2(old_stop("nobody", "f1", 10 * DAY, 7200, 7, 8)))
        .await;
    h.client
        .send(&old_stop("r3user", "g1", 40 * DAY, 100, 1, 1))
        .await;
    let (n1, n2) = (nas_id(&h, "bng1").await, nas_id(&h, "bng2").await);
    let top = |a: i64, b: i64| {
        json!([
            { "nas_id": n1, "nasipaddress": "127.0.0.1", "name": "bng1", "sessions_count": a },
            { "nas_id": n2, "nasipaddress": "127.0.0.2", "name": "bng2", "sessions_count": b },
        ])
    };

    let admin = admin_token();
    // Day: a1, b1, c1, d1 (e1 stopped before the window). 240 s = 0.0667 h.
    let day = stats(&h, "", &admin).await;
    assert_eq!(day["period"], "day");
    let since = chrono::DateTime::parse_from_rfc3339(day["since"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert!(
        (since - (i64::from(now()) - i64::from(DAY))).abs() <= 5,
        "since = {}",
        day["since"]
    );
    assert!(day["since"].as_str().unwrap().ends_with('Z'));
    assert_eq!(numbers(&day), json!([4, 3, 0.07, 3, 4000, 6000]));
    assert_eq!(day["top_nas"], top(3, 1));
    assert_eq!(stats(&h, "?period=day", &admin).await["total_sessions"], 4);

    // Week adds e1: 3840 s = 1.0667 h.
    let week = stats(&h, "?period=week", &admin).await;
    assert_eq!(week["period"], "week");
    assert_eq!(numbers(&week), json!([5, 3, 1.07, 4, 9000, 12000]));
    assert_eq!(week["top_nas"], top(4, 1));

    // Month adds f1: 11040 s = 3.0667 h. g1 (40 days) never counts.
    let month = stats(&h, "?period=month", &admin).await;
    assert_eq!(month["period"], "month");
    assert_eq!(numbers(&month), json!([6, 3, 3.07, 5, 9007, 12008]));
    assert_eq!(month["top_nas"], top(4, 2));

    // Reseller 2's subtree is resellers 2 and 3: b1 and d1 today; e1 within the month.
    let r2 = token("reseller", Some(2), None, &["sessions.view"]);
    let d = stats(&h, "", &r2).await;
    assert_eq!(numbers(&d), json!([2, 1, 0.05, 1, 3000, 4000]));
    assert_eq!(
        d["top_nas"],
        json!([{ "nas_id": n1, "nasipaddress": "127.0.0.1", "name": "bng1", "sessions_count": 2 }])
    );
    let m = stats(&h, "?period=month", &r2).await;
    assert_eq!(numbers(&m), json!([3, 1, 1.05, 2, 8000, 10000]));

    // Reseller 4 sees only the second NAS's session.
    let r4 = token("reseller", Some(4), None, &["sessions.view"]);
    let d = stats(&h, "", &r4).await;
    assert_eq!(numbers(&d), json!([1, 1, 0.0, 1, 0, 0]));
    assert_eq!(
        d["top_nas"],
        json!([{ "nas_id": n2, "nasipaddress": "127.0.0.2", "name": "bng2", "sessions_count": 1 }])
    );

    // The root reseller sees its whole tree; sessions.view_all lifts scoping altogether.
    let r1 = token("reseller", Some(1), None, &["sessions.view"]);
    assert_eq!(
        numbers(&stats(&h, "?period=month", &r1).await),
        json!([5, 3, 1.07, 4, 9007 - 7, 12008 - 8])
    );
    let all = token(
        "reseller",
        Some(4),
        None,
        &["sessions.view", "sessions.view_all"],
    );
    assert_eq!(
        numbers(&stats(&h, "?period=month", &all).await),
        numbers(&month)
    );

    // A subscriber sees its own sessions.
    let sub = token("subscriber", None, Some("r3user"), &["sessions.view"]);
    assert_eq!(
        numbers(&stats(&h, "?period=month", &sub).await),
        json!([2, 1, 0.05, 1, 3000, 4000])
    );

    // A reseller with nothing in the period still gets a well-formed answer.
    let empty = token("reseller", Some(99), None, &["sessions.view"]);
    let d = stats(&h, "?period=month", &empty).await;
    assert_eq!(numbers(&d), json!([0, 0, 0.0, 0, 0, 0]));
    assert_eq!(d["top_nas"], json!([]));
    h.server.stop().await;
}

async fn stats_refuse_bad_periods_and_callers_without_permission(b: Backend) {
    let h = Harness::start(b).await;
    let admin = admin_token();
    for bad in ["year", "days", "1"] {
        let (status, v) = api_json(
            &h,
            &format!("/api/sessions/stats?period={bad}"),
            Some(&admin),
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(
            v,
            json!({ "success": false, "message": "invalid period, must be day/week/month" })
        );
    }
    // Case does not matter; an empty value means the default.
    assert_eq!(stats(&h, "?period=Week", &admin).await["period"], "week");
    assert_eq!(stats(&h, "?period=", &admin).await["period"], "day");

    let (status, v) = api_json(&h, "/api/sessions/stats", None).await;
    assert_eq!(
        (status, v["message"].as_str()),
        (401, Some("missing token"))
    );
    let no_view = token("reseller", Some(1), None, &["subscribers.disconnect"]);
    let (status, v) = api_json(&h, "/api/sessions/stats", Some(&no_view)).await;
    assert_eq!(status, 403);
    assert_eq!(
        v,
        json!({ "success": false, "message": "sessions.view denied" })
    );
    h.server.stop().await;
}

async fn logs_list_a_sessions_events_in_order_as_json_and_text(b: Backend) {
    let h = Harness::start(b).await;
    let t = now();
    h.client.send(&Acct::start("bob", "L1").at(t - 120)).await;
    h.client
        .send(
            &Acct::interim("bob", "L1")
                .at(t - 60)
                .time(60)
                .octets(100, 200),
        )
        .await;
    h.client
        .send(
            &Acct::stop("bob", "L1")
                .at(t - 5)
                .time(115)
                .octets(150, 300)
                .cause(1),
        )
        .await;
    // A session radacctd closes itself: a new Start on the same key, long after the
    // first, closes the old row as Lost-Service at its last update (source "server").
    h.client.send(&Acct::start("carl", "S1").at(t - 200)).await;
    h.client
        .send(
            &Acct::interim("carl", "S1")
                .at(t - 150)
                .time(50)
                .octets(10, 20),
        )
        .await;
    h.client.send(&Acct::start("carl", "S1").at(t - 10)).await;

    let rows = h.rows().await;
    let id_of = |user: &str| {
        rows.iter()
            .filter(|r| r.username == user)
            .map(|r| (r.radacctid, r.acctuniqueid.clone()))
            .min()
            .unwrap()
    };
    let (bob, bob_unique) = id_of("bob");
    let ts = |d: u32| radacctd::api::params::rfc3339(i64::from(t - d));
    let admin = admin_token();

    let (status, v) = api_json(&h, &format!("/api/sessions/{bob}/logs"), Some(&admin)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v,
        json!({
            "success": true,
            "data": {
                "radacctid": bob,
                "acctuniqueid": bob_unique,
                "logs": [
                    { "timestamp": ts(120), "type": "Start", "source": "nas",
                      "acctsessiontime": 0, "acctinputoctets": 0, "acctoutputoctets": 0 },
                    { "timestamp": ts(60), "type": "Interim-Update", "source": "nas",
                      "acctsessiontime": 60, "acctinputoctets": 100, "acctoutputoctets": 200 },
                    { "timestamp": ts(5), "type": "Stop", "source": "nas",
                      "acctsessiontime": 115, "acctinputoctets": 150, "acctoutputoctets": 300 },
                ],
            }
        })
    );
    // format=json is the default spelled out.
    let (_, explicit) = api_json(
        &h,
        &format!("/api/sessions/{bob}/logs?format=json"),
        Some(&admin),
    )
    .await;
    assert_eq!(explicit, v);

    let (status, body, headers) = oneshot(
        &h,
        "GET",
        &format!("/api/sessions/{bob}/logs?format=text"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(
        String::from_utf8(body).unwrap(),
        format!(
            "{} Start source=nas session_time=0 input_octets=0 output_octets=0\n\
             {} Interim-Update source=nas session_time=60 input_octets=100 output_octets=200\n\
             {} Stop source=nas session_time=115 input_octets=150 output_octets=300\n",
            ts(120),
            ts(60),
            ts(5)
        )
    );

    let (carl, _) = id_of("carl");
    let (_, v) = api_json(&h, &format!("/api/sessions/{carl}/logs"), Some(&admin)).await;
    let kinds: Vec<_> = v["data"]["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["timestamp"].as_str().unwrap().to_owned(),
                e["type"].as_str().unwrap().to_owned(),
                e["source"].as_str().unwrap().to_owned(),
                e["acctsessiontime"].as_i64().unwrap(),
            )
        })
        .collect();
    let row = |d, k: &str, s: &str, secs| (ts(d), k.to_owned(), s.to_owned(), secs);
    assert_eq!(
        kinds,
        vec![
            row(200, "Start", "nas", 0),
            row(150, "Interim-Update", "nas", 50),
            row(150, "Stop", "server", 50),
        ]
    );

    // A subscriber may read its own session's history; an open session has a history too.
    let own = token("subscriber", None, Some("bob"), &["sessions.view"]);
    let (status, _) = api_json(&h, &format!("/api/sessions/{bob}/logs"), Some(&own)).await;
    assert_eq!(status, 200);
    let open = h
        .server
        .index
        .collect_where(|s| &*s.fields.username == "carl");
    assert_eq!(open.len(), 1);
    let (_, v) = api_json(
        &h,
        &format!("/api/sessions/{}/logs?format=text", open[0].radacctid),
        Some(&admin),
    )
    .await;
    assert_eq!(
        v,
        Value::String(format!(
            "{} Start source=nas session_time=0 input_octets=0 output_octets=0\n",
            ts(10)
        ))
    );
    h.server.stop().await;
}

async fn logs_of_unknown_or_foreign_sessions_are_refused(b: Backend) {
    let h = Harness::start(b).await;
    seed_reseller_tree(h.store()).await;
    h.client
        .send(&Acct::start("r3user", "F1").at(now() - 5))
        .await;
    let id = h.rows().await[0].radacctid;
    let admin = admin_token();

    for path in ["/api/sessions/999999/logs", "/api/sessions/abc/logs"] {
        let (status, v) = api_json(&h, path, Some(&admin)).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(
            v,
            json!({ "success": false, "message": "session not found" })
        );
    }
    let (status, v) = api_json(
        &h,
        &format!("/api/sessions/{id}/logs?format=xml"),
        Some(&admin),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(v["message"], "invalid format, must be json/text");

    // Reseller 4 is a sibling of r3user's branch; reseller 2 is above it.
    let r4 = token("reseller", Some(4), None, &["sessions.view"]);
    let (status, v) = api_json(&h, &format!("/api/sessions/{id}/logs"), Some(&r4)).await;
    assert_eq!(status, 403);
    assert_eq!(v, json!({ "success": false, "message": "not authorized" }));
    let other = token("subscriber", None, Some("r4user"), &["sessions.view"]);
    let (status, _) = api_json(&h, &format!("/api/sessions/{id}/logs"), Some(&other)).await;
    assert_eq!(status, 403);
    let r2 = token("reseller", Some(2), None, &["sessions.view"]);
    let (status, v) = api_json(&h, &format!("/api/sessions/{id}/logs"), Some(&r2)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["logs"].as_array().unwrap().len(), 1);

    let no_view = token("reseller", Some(2), None, &[]);
    let (status, v) = api_json(&h, &format!("/api/sessions/{id}/logs"), Some(&no_view)).await;
    assert_eq!(
        (status, v["message"].as_str()),
        (403, Some("sessions.view denied"))
    );
    let (status, _) = api_json(&h, &format!("/api/sessions/{id}/logs"), None).await;
    assert_eq!(status, 401);
    h.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_is_served_without_a_token() {
    let h = Harness::start(Backend::Sqlite).await;
    let (status, v) = api_json(&h, "/api/openapi.json", None).await;
    assert_eq!(status, 200);
    assert_eq!(v["openapi"], "3.0.3");
    for path in [
        "/api/sessions",
        "/api/sessions/stats",
        "/api/sessions/{id}/logs",
        "/api/subscribers/import",
        "/api/resellers/{id}",
    ] {
        assert!(v["paths"][path].is_object(), "{path} missing");
    }
    assert_eq!(
        v["paths"]["/api/sessions/stats"]["get"]["parameters"][0]["schema"]["enum"],
        json!(["day", "week", "month"])
    );
    h.server.stop().await;
}
