//! `GET /api/openapi.json`: a hand-written OpenAPI 3.0 description of every route of
//! [`router`](super::router), served without authentication so that tooling can fetch it.
//!
//! Written by hand (not derived from the handlers) because the contract's messages,
//! defaults and limits are what clients need, and they live in prose and validation code
//! that no derive macro sees. A unit test checks that every route registered in `mod.rs`
//! is described, so a new route cannot be forgotten silently.

use std::sync::OnceLock;

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// The document, built once: it is constant for the life of the process.
pub async fn document() -> Response {
    static DOC: OnceLock<Value> = OnceLock::new();
    Json(DOC.get_or_init(build)).into_response()
}

/// `{"$ref": "#/components/schemas/<name>"}`.
fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// A JSON error response with the messages the endpoint can give for this status.
fn error(description: &str, messages: &[&str]) -> Value {
    let mut schema = json!({
        "allOf": [schema_ref("Error")],
    });
    if !messages.is_empty() {
        schema = json!({
            "allOf": [
                schema_ref("Error"),
                { "type": "object", "properties": { "message": { "type": "string", "enum": messages } } },
            ]
        });
    }
    json!({
        "description": description,
        "content": { "application/json": { "schema": schema } },
    })
}

fn ok_json(description: &str, schema: Value) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": schema } },
    })
}

/// `{"success": true, "data": <data>}`.
fn envelope(data: Value) -> Value {
    json!({
        "type": "object",
        "required": ["success", "data"],
        "properties": {
            "success": { "type": "boolean", "enum": [true] },
            "data": data,
        },
    })
}

/// `{"success": true, "data": [<item>…], "pagination": {…}}`.
fn paged(item: Value) -> Value {
    let mut e = envelope(json!({ "type": "array", "items": item }));
    e["required"] = json!(["success", "data", "pagination"]);
    e["properties"]["pagination"] = schema_ref("Pagination");
    e
}

/// Responses every authenticated `/api` route can give besides its own. A status the
/// route already describes is kept: its own text (disconnect's 503 `NAS unreachable`,
/// export's 429 for busy export slots) already names the common cause too.
fn common(mut responses: Value) -> Value {
    if let Some(map) = responses.as_object_mut() {
        for (status, shared) in [
            ("401", "Unauthorized"),
            ("429", "RateLimited"),
            ("503", "StoreUnavailable"),
        ] {
            map.entry(status)
                .or_insert_with(|| json!({ "$ref": format!("#/components/responses/{shared}") }));
        }
    }
    responses
}

fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": description, "schema": schema })
}

fn path_param(name: &str, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": description, "schema": schema })
}

fn session_id() -> Value {
    path_param(
        "id",
        "`radacctid` of the session. A value that is not a number names no session (404).",
        json!({ "type": "integer", "format": "int64" }),
    )
}

/// The filters of `GET /api/sessions`, shared with the export.
fn filter_params() -> Vec<Value> {
    vec![
        query(
            "status",
            "active (open sessions, served from memory), closed, or all.",
            json!({ "type": "string", "enum": ["active", "closed", "all"], "default": "active" }),
        ),
        query(
            "search",
            "Substring of username, framedipaddress or callingstationid; `%` and `_` are literal. Case-insensitive for the ASCII letters A-Z only (`änne` does not find `ÄNNE` among open sessions or on SQLite; PostgreSQL's ILIKE may fold non-ASCII letters of stored sessions).",
            json!({ "type": "string", "maxLength": 253 }),
        ),
        query(
            "nas_id",
            "Only sessions of the NAS with this id.",
            json!({ "type": "integer", "format": "int64" }),
        ),
        query(
            "from",
            "ISO 8601 datetime: sessions started at or after this (no offset means UTC; a bare date is midnight UTC).",
            json!({ "type": "string", "format": "date-time", "example": "2026-05-01T00:00:00Z" }),
        ),
        query(
            "to",
            "ISO 8601 datetime: sessions started at or before this.",
            json!({ "type": "string", "format": "date-time", "example": "2026-05-12T23:59:59Z" }),
        ),
        query(
            "sort",
            "Sort column.",
            json!({ "type": "string", "enum": ["acctstarttime", "acctinputoctets", "acctoutputoctets", "acctsessiontime"], "default": "acctstarttime" }),
        ),
        query(
            "order",
            "Sort direction.",
            json!({ "type": "string", "enum": ["asc", "desc"], "default": "desc" }),
        ),
        query(
            "source",
            "live (radacct, the default) or archive: closed sessions the archiver moved to radacct_archive. With archive, status defaults to closed and active is refused (400).",
            json!({ "type": "string", "enum": ["live", "archive"], "default": "live" }),
        ),
    ]
}

fn paging_params() -> Vec<Value> {
    vec![
        query(
            "page",
            "1-indexed page.",
            json!({ "type": "integer", "minimum": 1, "default": 1 }),
        ),
        query(
            "limit",
            "Rows per page.",
            json!({ "type": "integer", "minimum": 1, "maximum": 500, "default": 50 }),
        ),
    ]
}

const LIST_400: &[&str] = &[
    "invalid status, must be active/closed/all",
    "invalid status, the archive holds closed sessions only",
    "invalid source, must be live/archive",
    "invalid page, must be a positive integer",
    "invalid limit, must be between 1 and 500",
    "invalid search, must be at most 253 characters",
    "invalid nas_id, must be an integer",
    "invalid from, must be an ISO 8601 datetime such as 2026-05-01T00:00:00Z",
    "invalid to, must be an ISO 8601 datetime such as 2026-05-01T00:00:00Z",
    "invalid range, from must not be after to",
    "invalid sort, must be one of acctstarttime, acctinputoctets, acctoutputoctets, acctsessiontime",
    "invalid order, must be asc/desc",
];

fn view_denied() -> Value {
    error("Caller lacks sessions.view.", &["sessions.view denied"])
}

fn admin_only() -> Value {
    error("Caller is not an admin.", &["not authorized"])
}

fn disconnect_operation(summary: &str, description: &str, operation_id: &str) -> Value {
    json!({
        "tags": ["Sessions"],
        "summary": summary,
        "description": description,
        "operationId": operation_id,
        "parameters": [session_id()],
        "responses": common(json!({
            "200": ok_json("Disconnect sent, or the session was already closed (idempotent).", schema_ref("DisconnectResult")),
            "403": error("Caller lacks subscribers.disconnect, or the session is outside the caller's scope.", &["subscribers.disconnect denied", "not authorized"]),
            "404": error("Bad id.", &["session not found"]),
            "503": error("Both CoA and MikroTik-API attempts failed (rare), or the database is unavailable.", &["NAS unreachable", "database unavailable"]),
        })),
    })
}

fn csv_body(header: &str, example: &str) -> Value {
    json!({
        "required": true,
        "description": format!("CSV with the header `{header}` (case-insensitive), UTF-8, at most 10 MiB. Fields may be double-quoted (RFC 4180); blank lines are skipped."),
        "content": { "text/csv": { "schema": { "type": "string" }, "example": example } },
    })
}

fn import_responses(what: &str, examples: &[&str]) -> Value {
    let examples: serde_json::Map<String, Value> = examples
        .iter()
        .enumerate()
        .map(|(i, m)| {
            (
                format!("e{i}"),
                json!({ "value": { "success": false, "message": m } }),
            )
        })
        .collect();
    common(json!({
        "200": ok_json("Every line imported in one transaction.", json!({
            "type": "object",
            "required": ["success", "imported"],
            "properties": {
                "success": { "type": "boolean", "enum": [true] },
                "imported": { "type": "integer", "description": format!("Number of {what} in the file.") },
            },
        })),
        "400": {
            "description": "A line is invalid: the message names the line and the problem (`line 3: unknown reseller_id 7`). Nothing was imported.",
            "content": { "application/json": { "schema": schema_ref("Error"), "examples": examples } },
        },
        "403": admin_only(),
        "413": error("Body larger than 10 MiB.", &["request body too large, at most 10 MiB"]),
    }))
}

/// The whole document.
pub fn build() -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "radacctd API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The Sessions API of radacctd (RADIUS accounting server): live and historical sessions from `radacct`, disconnect, export, statistics, per-session history, a live WebSocket stream, and admin endpoints for subscribers and the reseller tree.\n\nAuthentication: `Authorization: Bearer <jwt>` (HS256 with the shared secret by default). Claims: `sub`, `role` (admin | reseller | subscriber), `reseller_id`, `username`, `permissions` (`sessions.view`, `sessions.view_all`, `subscribers.disconnect`), `exp`. A reseller sees only sessions of subscribers in its reseller subtree (`sessions.view_all` lifts that); a subscriber only its own. Times are RFC 3339 UTC with `Z`.\n\nEvery error is `{\"success\": false, \"message\": \"…\"}`. Rate limit: 300 requests per minute per client address on `/api` (429 with `Retry-After`).",
        },
        "servers": [{ "url": "/" }],
        "security": [{ "bearerAuth": [] }],
        "tags": [
            { "name": "Sessions", "description": "Sessions (`radacct` rows) within the caller's scope." },
            { "name": "Admin", "description": "Subscribers and resellers (role admin only)." },
            { "name": "Operations", "description": "Health, readiness, metrics and this document (no authentication)." },
        ],
        "paths": paths(),
        "components": components(),
    })
}

/// Every route, one `json!` each (one literal for all would exceed the macro's recursion
/// limit).
fn paths() -> Value {
    let mut list_params = filter_params();
    list_params.splice(1..1, paging_params());
    let mut export_params = filter_params();
    export_params.push(query(
        "format",
        "Output format; only csv today (xlsx is reserved).",
        json!({ "type": "string", "enum": ["csv"], "default": "csv" }),
    ));
    export_params.push(query(
        "columns",
        "Comma-separated field names of the Session object, in the order wanted; spaces and empty items are ignored, an unknown or repeated name is refused. Default (absent or empty): the 10 columns of the contract's sample header, radacctid,username,nasipaddress,framedipaddress,acctstarttime,acctstoptime,acctsessiontime,acctinputoctets,acctoutputoctets,acctterminatecause; the other fields only when listed.",
        json!({ "type": "string", "example": "radacctid,username,acctstarttime" }),
    ));

    let mut paths = Map::new();
    paths.insert(
        "/api/sessions".into(),
        json!({
                "get": {
                    "tags": ["Sessions"],
                    "summary": "List sessions",
                    "description": "Permission: sessions.view. Open sessions come from the in-memory index, closed and all from the database.",
                    "operationId": "listSessions",
                    "parameters": list_params,
                    "responses": common(json!({
                        "200": ok_json("A page of sessions.", paged(schema_ref("Session"))),
                        "400": error("Validation failure on query params.", LIST_400),
                        "403": view_denied(),
                    })),
                }
            }),
    );
    paths.insert(
        "/api/sessions/count".into(),
        json!({
                "get": {
                    "tags": ["Sessions"],
                    "summary": "Count active sessions",
                    "description": "Permission: sessions.view. Number of currently active sessions in the caller's scope, from memory (not cached, always current).",
                    "operationId": "countSessions",
                    "responses": common(json!({
                        "200": ok_json("The count.", json!({
                            "type": "object",
                            "required": ["success", "count"],
                            "properties": {
                                "success": { "type": "boolean", "enum": [true] },
                                "count": { "type": "integer", "example": 1842 },
                            },
                        })),
                        "403": view_denied(),
                    })),
                }
            }),
    );
    paths.insert(
        "/api/sessions/active".into(),
        json!({
                "get": {
                    "tags": ["Sessions"],
                    "summary": "All active sessions",
                    "description": "Permission: sessions.view. A bare JSON array of every open session in scope, newest first (not paged, not wrapped).",
                    "operationId": "activeSessions",
                    "responses": common(json!({
                        "200": ok_json("The open sessions.", json!({ "type": "array", "items": schema_ref("Session") })),
                        "403": view_denied(),
                    })),
                }
            }),
    );
    paths.insert(
        "/api/sessions/export".into(),
        json!({
                "get": {
                    "tags": ["Sessions"],
                    "summary": "Export sessions as CSV",
                    "description": "Permission: sessions.view. Same filters as GET /api/sessions; `page` and `limit` are ignored (not even validated). Streamed with constant memory; at most 500,000 rows.",
                    "operationId": "exportSessions",
                    "parameters": export_params,
                    "responses": common(json!({
                        "200": {
                            "description": "CSV (`Content-Disposition: attachment`). Header: radacctid,username,nasipaddress,framedipaddress,acctstarttime,acctstoptime,acctsessiontime,acctinputoctets,acctoutputoctets,acctterminatecause.",
                            "headers": { "Content-Disposition": { "schema": { "type": "string" }, "description": "attachment; filename=…" } },
                            "content": { "text/csv": { "schema": { "type": "string" } } },
                        },
                        "400": error("Validation failure on query params: the messages of GET /api/sessions except those of `page` and `limit`, plus `invalid format, must be csv`, `invalid columns, unknown column: <name>` and `invalid columns, duplicate column: <name>`.", &[]),
                        "403": view_denied(),
                        "413": error("Export row count exceeded (500,000).", &["too many rows, narrow date range"]),
                        "429": {
                            "description": "More than 300 requests per minute from this client address, or every export slot (`http.max_concurrent_exports`) is streaming.",
                            "headers": { "Retry-After": { "schema": { "type": "integer" }, "description": "Seconds to wait (10 for busy export slots)." } },
                            "content": { "application/json": { "schema": {
                                "allOf": [schema_ref("Error"), { "type": "object", "properties": { "message": { "type": "string", "enum": ["rate limit exceeded", "too many concurrent exports, try again later"] } } }],
                            } } },
                        },
                    })),
                }
            }),
    );
    paths.insert(
        "/api/sessions/stats".into(),
        json!({
                "get": {
                    "tags": ["Sessions"],
                    "summary": "Session statistics over a period",
                    "description": "Permission: sessions.view; within the caller's scope. The period is the window [now − 1/7/30 days, now]. A session counts when it was active at any time in the window (still open, or stopped at or after `since`). Duration and octets are the totals of those whole sessions (not clipped to the window). `active_sessions` is the number open right now. `top_nas`: the five NAS with the most such sessions.",
                    "operationId": "sessionStats",
                    "parameters": [query("period", "Window length.", json!({ "type": "string", "enum": ["day", "week", "month"], "default": "day" }))],
                    "responses": common(json!({
                        "200": ok_json("Totals.", envelope(schema_ref("Stats"))),
                        "400": error("Bad period.", &["invalid period, must be day/week/month"]),
                        "403": view_denied(),
                    })),
                }
            }),
    );
    paths.insert(
        "/api/sessions/ws".into(),
        json!({
                "get": {
                    "tags": ["Sessions"],
                    "summary": "Live session stream (WebSocket)",
                    "description": "Upgrade to a WebSocket carrying committed session changes in the caller's scope (permission sessions.view). Every message is one JSON text frame.\n\nAuthentication: with an `Authorization: Bearer` header on the upgrade request, the token is checked before upgrading (plain 401/403 with the error body, no socket). Without it (browsers cannot set headers) the first client message must be `{\"type\": \"auth\", \"token\": \"<jwt>\"}` within 10 s, else the server sends `{\"type\": \"error\", \"message\": …}` (`auth timeout`, `auth required`, `missing token`, `invalid token`, `token expired`, `sessions.view denied`) and closes with code 1008.\n\nServer messages: first `{\"type\": \"auth\", \"success\": true}`; then `{\"type\": \"event\", \"event\": \"started\"|\"updated\"|\"stopped\", \"session\": <Session>}` in commit order; `{\"type\": \"error\", \"message\": \"unknown message\"}` for an unintelligible client message; `{\"type\": \"disconnect\", \"reason\": \"too slow\"|\"server shutting down\"|\"token expired\"}` before the server closes the stream.",
                    "operationId": "liveSessions",
                    "security": [{ "bearerAuth": [] }, {}],
                    "parameters": [
                        { "name": "Upgrade", "in": "header", "required": true, "schema": { "type": "string", "enum": ["websocket"] } },
                    ],
                    "responses": common(json!({
                        "101": { "description": "Switching Protocols: the WebSocket is open." },
                        "400": error("Not a WebSocket upgrade request.", &["websocket upgrade required"]),
                        "426": error("Not a WebSocket upgrade request (protocol upgrade missing).", &["websocket upgrade required"]),
                        "403": view_denied(),
                    })),
                }
            }),
    );
    paths.insert(
        "/api/sessions/{id}".into(),
        json!({
                "get": {
                    "tags": ["Sessions"],
                    "summary": "One session",
                    "description": "Permission: sessions.view.",
                    "operationId": "getSession",
                    "parameters": [session_id()],
                    "responses": common(json!({
                        "200": ok_json("The session.", envelope(schema_ref("Session"))),
                        "403": error("Lacks sessions.view, or the session is outside the caller's scope.", &["sessions.view denied", "not authorized"]),
                        "404": error("radacctid does not exist, or the id is not a number (or not even UTF-8).", &["session not found"]),
                    })),
                },
                "delete": disconnect_operation(
                    "Disconnect a session (alias)",
                    "Same as POST /api/sessions/{id}/disconnect. Permission: subscribers.disconnect.",
                    "deleteSession",
                ),
            }),
    );
    paths.insert(
        "/api/sessions/{id}/logs".into(),
        json!({
                "get": {
                    "tags": ["Sessions"],
                    "summary": "A session's history",
                    "description": "Permission: sessions.view. Every Start, Interim-Update and Stop of the session, oldest first: `source` is `nas` for packets from the NAS and `server` for closes radacctd made (Lost-Service, NAS-Reboot, Admin-Reset, NAS-Idle-Timeout). Counters are the values each packet carried. `format=text` gives one line per event: `2026-05-12T08:14:22Z Start source=nas session_time=0 input_octets=0 output_octets=0`.",
                    "operationId": "sessionLogs",
                    "parameters": [
                        session_id(),
                        query("format", "Output format.", json!({ "type": "string", "enum": ["json", "text"], "default": "json" })),
                    ],
                    "responses": common(json!({
                        "200": {
                            "description": "The history.",
                            "content": {
                                "application/json": { "schema": envelope(schema_ref("SessionLogs")) },
                                "text/plain": {
                                    "schema": { "type": "string" },
                                    "example": "2026-05-12T08:14:22Z Start source=nas session_time=0 input_octets=0 output_octets=0\n2026-05-12T08:19:22Z Interim-Update source=nas session_time=300 input_octets=1048576 output_octets=5242880\n",
                                },
                            },
                        },
                        "400": error("Bad format.", &["invalid format, must be json/text"]),
                        "403": error("Lacks sessions.view, or the session is outside the caller's scope.", &["sessions.view denied", "not authorized"]),
                        "404": error("radacctid does not exist.", &["session not found"]),
                    })),
                }
            }),
    );
    paths.insert(
        "/api/sessions/{id}/disconnect".into(),
        json!({
                "post": disconnect_operation(
                    "Disconnect a live session",
                    "Permission: subscribers.disconnect. Sends a RADIUS Disconnect-Request (RFC 5176) to the NAS's coa_port (default 1700); if that times out (3 s) or is refused, falls back to the MikroTik API /ppp/active/remove. When the NAS confirms, radacctd closes the row at once (Admin-Reset); otherwise the stale-session sweeper closes it later. POST, not DELETE, because the action has side effects beyond removing a row. No body. Every attempt is written to the audit log.",
                    "disconnectSession",
                ),
            }),
    );
    paths.insert(
        "/api/subscribers".into(),
        json!({
                "get": {
                    "tags": ["Admin"],
                    "summary": "List subscribers",
                    "description": "Role admin. Subscribers by username, paged.",
                    "operationId": "listSubscribers",
                    "parameters": [
                        query("reseller_id", "Only subscribers assigned directly to this reseller (not its subtree).", json!({ "type": "integer", "format": "int64" })),
                        paging_params()[0].clone(),
                        paging_params()[1].clone(),
                    ],
                    "responses": common(json!({
                        "200": ok_json("A page of subscribers.", paged(schema_ref("Subscriber"))),
                        "400": error("Bad query parameter.", &["invalid reseller_id, must be an integer", "invalid page, must be a positive integer", "invalid limit, must be between 1 and 500"]),
                        "403": admin_only(),
                    })),
                }
            }),
    );
    paths.insert(
        "/api/subscribers/import".into(),
        json!({
                "post": {
                    "tags": ["Admin"],
                    "summary": "Import subscribers from CSV",
                    "description": "Role admin. Inserts or updates every subscriber of the file in one transaction (all or nothing). An empty reseller_id means no reseller. Scoping follows from the next request.",
                    "operationId": "importSubscribers",
                    "requestBody": csv_body("username,reseller_id", "username,reseller_id\nuser1@example.lb,2\nuser2@example.lb,\n"),
                    "responses": import_responses("subscribers", &[
                        "line 3: unknown reseller_id 7",
                        "line 4: duplicate username \"bob\" (first on line 2)",
                        "line 1: expected the header username,reseller_id",
                    ]),
                }
            }),
    );
    paths.insert(
        "/api/subscribers/{username}".into(),
        json!({
                "get": {
                    "tags": ["Admin"],
                    "summary": "One subscriber",
                    "description": "Role admin.",
                    "operationId": "getSubscriber",
                    "parameters": [path_param("username", "User-Name as in radacct.", json!({ "type": "string" }))],
                    "responses": common(json!({
                        "200": ok_json("The subscriber.", envelope(schema_ref("Subscriber"))),
                        "403": admin_only(),
                        "400": error("The username cannot be one: control characters, longer than 253 bytes, or percent-encoded bytes that are not UTF-8.", &[
                            "invalid username, must be 1 to 253 bytes without control characters",
                            "invalid username, must be percent-encoded UTF-8",
                        ]),
                        "404": error("No such subscriber.", &["subscriber not found"]),
                    })),
                },
                "put": {
                    "tags": ["Admin"],
                    "summary": "Create or update a subscriber",
                    "description": "Role admin. Assigns the subscriber to a reseller (or none). A new subscriber's is_online follows its open sessions.",
                    "operationId": "putSubscriber",
                    "parameters": [path_param("username", "User-Name as in radacct: 1 to 253 bytes, no control characters.", json!({ "type": "string", "maxLength": 253 }))],
                    "requestBody": {
                        "required": true,
                        "description": "JSON, at most 64 KiB. Unknown fields are refused.",
                        "content": { "application/json": { "schema": {
                            "type": "object",
                            "required": ["reseller_id"],
                            "additionalProperties": false,
                            "properties": { "reseller_id": { "type": "integer", "format": "int64", "minimum": 1, "nullable": true } },
                        }, "example": { "reseller_id": 2 } } },
                    },
                    "responses": common(json!({
                        "200": ok_json("The subscriber as stored.", envelope(schema_ref("Subscriber"))),
                        "400": error("Invalid body or username, or the reseller does not exist. Syntax errors name the line and column.", &[
                            "unknown reseller_id",
                            "missing field reseller_id",
                            "invalid reseller_id, must be a positive integer or null",
                            "request body must be a JSON object such as {\"reseller_id\": 2}",
                            "invalid username, must be 1 to 253 bytes without control characters",
                            "invalid username, must be percent-encoded UTF-8",
                        ]),
                        "403": admin_only(),
                        "413": error("Body larger than 64 KiB.", &["request body too large, at most 64 KiB"]),
                    })),
                },
            }),
    );
    paths.insert(
        "/api/resellers".into(),
        json!({
                "get": {
                    "tags": ["Admin"],
                    "summary": "List resellers",
                    "description": "Role admin. The whole reseller tree as a flat list by id.",
                    "operationId": "listResellers",
                    "responses": common(json!({
                        "200": ok_json("Every reseller.", envelope(json!({ "type": "array", "items": schema_ref("Reseller") }))),
                        "403": admin_only(),
                    })),
                }
            }),
    );
    paths.insert(
        "/api/resellers/import".into(),
        json!({
                "post": {
                    "tags": ["Admin"],
                    "summary": "Import resellers from CSV",
                    "description": "Role admin. Inserts or updates every reseller of the file in one transaction (all or nothing). Parents may appear later in the file than their children; the resulting tree must have every parent and no cycle. An empty parent_id makes a root.",
                    "operationId": "importResellers",
                    "requestBody": csv_body("id,parent_id,name", "id,parent_id,name\n2,1,North\n1,,Head office\n"),
                    "responses": import_responses("resellers", &[
                        "line 3: unknown parent_id 9",
                        "line 2: reseller tree must not contain cycles (reseller 5 would be its own ancestor)",
                        "line 4: duplicate id 2 (first on line 2)",
                    ]),
                }
            }),
    );
    paths.insert(
        "/api/resellers/{id}".into(),
        json!({
                "put": {
                    "tags": ["Admin"],
                    "summary": "Create or update a reseller",
                    "description": "Role admin. parent_id is required (null for a root) and must exist; a change that would make a reseller its own ancestor is refused. name may be omitted or null to keep the stored one (empty for a new reseller).",
                    "operationId": "putReseller",
                    "parameters": [path_param("id", "Reseller id.", json!({ "type": "integer", "format": "int64", "minimum": 1 }))],
                    "requestBody": {
                        "required": true,
                        "description": "JSON, at most 64 KiB. Unknown fields are refused.",
                        "content": { "application/json": { "schema": {
                            "type": "object",
                            "required": ["parent_id"],
                            "additionalProperties": false,
                            "properties": {
                                "parent_id": { "type": "integer", "format": "int64", "minimum": 1, "nullable": true },
                                "name": { "type": "string", "maxLength": 128, "nullable": true },
                            },
                        }, "example": { "parent_id": 1, "name": "North" } } },
                    },
                    "responses": common(json!({
                        "200": ok_json("The reseller as stored.", envelope(schema_ref("Reseller"))),
                        "400": error("Invalid id or body, unknown parent, or a cycle.", &[
                            "reseller tree must not contain cycles",
                            "unknown parent_id",
                            "missing field parent_id",
                            "invalid parent_id, must be a positive integer or null",
                            "invalid name, must be at most 128 characters without control characters",
                            "invalid reseller id, must be a positive integer",
                        ]),
                        "403": admin_only(),
                        "413": error("Body larger than 64 KiB.", &["request body too large, at most 64 KiB"]),
                    })),
                }
            }),
    );
    paths.insert(
        "/api/openapi.json".into(),
        json!({
            "get": {
                "tags": ["Operations"],
                "summary": "This document",
                "operationId": "openapi",
                "security": [],
                "responses": {
                    "200": ok_json("OpenAPI 3.0 document.", json!({ "type": "object" })),
                    "429": { "$ref": "#/components/responses/RateLimited" },
                },
            }
        }),
    );
    paths.insert(
        "/healthz".into(),
        json!({
                "get": {
                    "tags": ["Operations"],
                    "summary": "Liveness",
                    "description": "200 while the process serves HTTP.",
                    "operationId": "healthz",
                    "security": [],
                    "responses": {
                        "200": ok_json("Alive.", json!({ "type": "object", "properties": { "status": { "type": "string", "enum": ["ok"] } } })),
                    },
                }
            }),
    );
    paths.insert(
        "/readyz".into(),
        json!({
                "get": {
                    "tags": ["Operations"],
                    "summary": "Readiness",
                    "description": "Ready when the database answers: a load balancer should not send panel traffic to a node whose database is gone.",
                    "operationId": "readyz",
                    "security": [],
                    "responses": {
                        "200": ok_json("Ready.", json!({ "type": "object", "properties": {
                            "status": { "type": "string", "enum": ["ready"] },
                            "open_sessions": { "type": "integer" },
                        } })),
                        "503": error("The database does not answer.", &["store unavailable"]),
                    },
                }
            }),
    );
    paths.insert(
        "/metrics".into(),
        json!({
                "get": {
                    "tags": ["Operations"],
                    "summary": "Prometheus metrics",
                    "description": "Prometheus text exposition format; metric names radacctd_*.",
                    "operationId": "metrics",
                    "security": [],
                    "responses": {
                        "200": { "description": "Metrics.", "content": { "text/plain": { "schema": { "type": "string" } } } },
                    },
                }
            }),
    );
    Value::Object(paths)
}

fn components() -> Value {
    let mut schemas = Map::new();
    schemas.insert(
        "Error".into(),
        json!({
            "type": "object",
            "required": ["success", "message"],
            "properties": {
                "success": { "type": "boolean", "enum": [false] },
                "message": { "type": "string", "example": "session not found" },
            },
        }),
    );
    schemas.insert(
        "Pagination".into(),
        json!({
            "type": "object",
            "required": ["page", "limit", "total"],
            "properties": {
                "page": { "type": "integer", "example": 1 },
                "limit": { "type": "integer", "example": 50 },
                "total": { "type": "integer", "example": 1842 },
            },
        }),
    );
    schemas.insert(
        "Session".into(),
        json!({
                    "type": "object",
                    "description": "One radacct row: a PPPoE connect/disconnect cycle. Column names as in radacct (FreeRADIUS); times RFC 3339 UTC; absent values null.",
                    "required": ["radacctid", "username", "acctsessionid", "acctuniqueid", "acctstarttime", "acctupdatetime", "acctinputoctets", "acctoutputoctets", "acctsessiontime"],
                    "properties": {
                        "radacctid": { "type": "integer", "format": "int64", "example": 12_345_678 },
                        "username": { "type": "string", "example": "user1@example.lb" },
                        "acctsessionid": { "type": "string", "example": "8a3f9c01" },
                        "acctuniqueid": { "type": "string", "description": "FreeRADIUS acctuniqueid (md5 hex); unique per session." },
                        "nasipaddress": { "type": "string", "nullable": true, "example": "10.0.0.1" },
                        "nas_id": { "type": "integer", "format": "int64", "nullable": true, "example": 2 },
                        "nasportid": { "type": "string", "nullable": true, "example": "ether2" },
                        "nasporttype": { "type": "string", "nullable": true, "example": "Ethernet" },
                        "framedipaddress": { "type": "string", "nullable": true, "example": "100.64.0.10" },
                        "framedipv6prefix": { "type": "string", "nullable": true },
                        "delegatedipv6prefix": { "type": "string", "nullable": true },
                        "callingstationid": { "type": "string", "nullable": true, "example": "AA:BB:CC:DD:EE:01" },
                        "calledstationid": { "type": "string", "nullable": true },
                        "acctstarttime": { "type": "string", "format": "date-time", "example": "2026-05-12T08:14:22Z" },
                        "acctstoptime": { "type": "string", "format": "date-time", "nullable": true },
                        "acctupdatetime": { "type": "string", "format": "date-time", "example": "2026-05-12T11:01:03Z" },
                        "acctinputoctets": { "type": "integer", "format": "int64", "example": 1_234_567_890_i64 },
                        "acctoutputoctets": { "type": "integer", "format": "int64", "example": 9_876_543_210_i64 },
                        "acctsessiontime": { "type": "integer", "format": "int64", "example": 10241 },
                        "acctterminatecause": { "type": "string", "nullable": true, "example": "User-Request" },
                    },
                }),
    );
    schemas.insert(
        "DisconnectResult".into(),
        json!({
                    "type": "object",
                    "required": ["success", "method", "message"],
                    "properties": {
                        "success": { "type": "boolean", "enum": [true] },
                        "method": { "type": "string", "enum": ["coa", "api", "already_closed"], "description": "coa: CoA Disconnect-ACK; api: the MikroTik-API fallback removed it; already_closed: the session was already gone." },
                        "message": { "type": "string", "enum": ["disconnect request sent", "session already closed"] },
                    },
                }),
    );
    schemas.insert(
        "Stats".into(),
        json!({
                    "type": "object",
                    "properties": {
                        "period": { "type": "string", "enum": ["day", "week", "month"] },
                        "since": { "type": "string", "format": "date-time", "description": "Start of the window (now minus 1, 7 or 30 days)." },
                        "total_sessions": { "type": "integer" },
                        "active_sessions": { "type": "integer", "description": "Open right now (in-memory index)." },
                        "total_duration_hours": { "type": "number", "description": "Sum of acctsessiontime in hours, two decimals." },
                        "unique_users": { "type": "integer" },
                        "total_input_octets": { "type": "integer", "format": "int64" },
                        "total_output_octets": { "type": "integer", "format": "int64" },
                        "top_nas": { "type": "array", "maxItems": 5, "items": {
                            "type": "object",
                            "properties": {
                                "nas_id": { "type": "integer", "nullable": true },
                                "nasipaddress": { "type": "string", "nullable": true },
                                "name": { "type": "string", "nullable": true, "description": "NAS short name when it is a known client." },
                                "sessions_count": { "type": "integer" },
                            },
                        } },
                    },
                }),
    );
    schemas.insert(
        "SessionLogs".into(),
        json!({
            "type": "object",
            "properties": {
                "radacctid": { "type": "integer", "format": "int64" },
                "acctuniqueid": { "type": "string" },
                "logs": { "type": "array", "items": {
                    "type": "object",
                    "properties": {
                        "timestamp": { "type": "string", "format": "date-time" },
                        "type": { "type": "string", "enum": ["Start", "Interim-Update", "Stop"] },
                        "source": { "type": "string", "enum": ["nas", "server"] },
                        "acctsessiontime": { "type": "integer", "format": "int64" },
                        "acctinputoctets": { "type": "integer", "format": "int64" },
                        "acctoutputoctets": { "type": "integer", "format": "int64" },
                    },
                } },
            },
        }),
    );
    schemas.insert(
        "Subscriber".into(),
        json!({
                    "type": "object",
                    "properties": {
                        "username": { "type": "string" },
                        "reseller_id": { "type": "integer", "format": "int64", "nullable": true },
                        "is_online": { "type": "boolean", "description": "Whether the subscriber has an open session." },
                    },
                }),
    );
    schemas.insert(
        "Reseller".into(),
        json!({
            "type": "object",
            "properties": {
                "id": { "type": "integer", "format": "int64" },
                "parent_id": { "type": "integer", "format": "int64", "nullable": true },
                "name": { "type": "string" },
            },
        }),
    );
    let security_schemes = json!({
        "bearerAuth": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "HS256 with the secret shared with the panel (RS256 or EdDSA with a configured public key). `exp` is required.",
        }
    });
    let responses = json!({
        "Unauthorized": error("Missing, expired or invalid token (`WWW-Authenticate: Bearer`).", &["missing token", "invalid token", "token expired", "authentication is not configured"]),
        "RateLimited": {
            "description": "More than 300 requests per minute from this client address.",
            "headers": { "Retry-After": { "schema": { "type": "integer" }, "description": "Seconds to wait." } },
            "content": { "application/json": { "schema": {
                "allOf": [schema_ref("Error"), { "type": "object", "properties": { "message": { "type": "string", "enum": ["rate limit exceeded"] } } }],
            } } },
        },
        "StoreUnavailable": error("The database is unavailable; retry later.", &["database unavailable"]),
    });
    json!({
        "securitySchemes": security_schemes,
        "responses": responses,
        "schemas": Value::Object(schemas),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(path, method)` of every `.route(…)` in `mod.rs`, read from its source so that a
    /// route added there without a description here fails this test.
    fn registered_routes() -> Vec<(String, String)> {
        let src = include_str!("mod.rs");
        let mut out = Vec::new();
        let mut rest = src;
        while let Some(at) = rest.find(".route(") {
            let args = &rest[at + ".route(".len()..];
            // The call's arguments, up to the matching parenthesis.
            let mut depth = 1usize;
            let mut end = args.len();
            for (i, c) in args.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let call = &args[..end];
            rest = &args[end..];
            let Some(path) = call.split('"').nth(1) else {
                continue;
            };
            for method in ["get", "post", "put", "delete", "patch"] {
                let found = call.match_indices(&format!("{method}(")).any(|(i, _)| {
                    i == 0
                        || !call[..i]
                            .chars()
                            .next_back()
                            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
                });
                if found {
                    out.push((path.to_owned(), method.to_owned()));
                }
            }
        }
        out
    }

    #[test]
    fn every_registered_route_is_described() {
        let routes = registered_routes();
        assert!(routes.len() >= 19, "parsed too few routes: {routes:?}");
        assert!(routes.contains(&("/api/subscribers/{username}".into(), "put".into())));
        assert!(routes.contains(&("/api/subscribers/{username}".into(), "get".into())));
        let doc = build();
        for (path, method) in routes {
            assert!(
                doc["paths"][&path][&method].is_object(),
                "{method} {path} is routed in mod.rs but missing from the OpenAPI document"
            );
        }
    }

    #[test]
    fn contract_additions_are_described() {
        let doc = build();
        assert!(doc["paths"]["/api/sessions/{id}/disconnect"]["post"].is_object());
        assert!(doc["paths"]["/api/sessions/{id}"]["delete"].is_object());
        let statuses = doc["paths"]["/api/sessions/{id}/disconnect"]["post"]["responses"]
            .as_object()
            .unwrap();
        for s in ["200", "401", "403", "404", "503"] {
            assert!(statuses.contains_key(s), "disconnect lacks {s}");
        }
    }

    /// The messages a response lists (`allOf[1].properties.message.enum`).
    fn messages(response: &Value) -> Vec<&str> {
        response["content"]["application/json"]["schema"]["allOf"][1]["properties"]["message"]
            ["enum"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    /// `common()` adds the shared 401/429/503 without replacing a route's own: the
    /// disconnect's 503 is `NAS unreachable` (and the database), not only the database.
    #[test]
    fn a_routes_own_responses_survive_the_common_ones() {
        let doc = build();
        for (path, method) in [
            ("/api/sessions/{id}/disconnect", "post"),
            ("/api/sessions/{id}", "delete"),
        ] {
            let r = &doc["paths"][path][method]["responses"]["503"];
            assert!(
                messages(r).contains(&"NAS unreachable"),
                "{method} {path} 503: {r}"
            );
            assert!(messages(r).contains(&"database unavailable"));
        }
        let r = &doc["paths"]["/api/sessions/export"]["get"]["responses"]["429"];
        assert_eq!(
            messages(r),
            [
                "rate limit exceeded",
                "too many concurrent exports, try again later"
            ]
        );
        // Routes without their own keep the shared ones.
        assert_eq!(
            doc["paths"]["/api/sessions"]["get"]["responses"]["503"]["$ref"],
            "#/components/responses/StoreUnavailable"
        );
    }

    #[test]
    fn list_400_names_every_message_of_the_parser() {
        let doc = build();
        let listed = messages(&doc["paths"]["/api/sessions"]["get"]["responses"]["400"]);
        let src = include_str!("params.rs");
        let body = &src[src.find("pub fn parse(p: &Params)").unwrap()..];
        let body = &body[..body.find("\n    pub fn offset").unwrap()];
        let mut found = 0;
        for part in body.split("ApiError::bad(").skip(1) {
            let literal = part.split('"').nth(1).unwrap();
            if literal.starts_with("invalid ") && !literal.contains('{') {
                found += 1;
                // The sort message is split over lines in the source.
                let literal = literal.split('\\').next().unwrap().trim_end();
                assert!(
                    listed.iter().any(|m| m.starts_with(literal)),
                    "LIST_400 lacks {literal:?}"
                );
            }
        }
        assert!(found >= 10, "parsed too few messages: {found}");
        assert!(listed.contains(&"invalid source, must be live/archive"));
        assert!(listed.contains(&"invalid status, the archive holds closed sessions only"));
    }

    #[test]
    fn export_columns_default_is_the_sample_header_not_all() {
        let doc = build();
        let params = doc["paths"]["/api/sessions/export"]["get"]["parameters"]
            .as_array()
            .unwrap();
        let columns = params.iter().find(|p| p["name"] == "columns").unwrap();
        let text = columns["description"].as_str().unwrap();
        assert!(!text.contains("default: all"), "{text}");
        assert!(
            text.contains("radacctid,username,nasipaddress,framedipaddress,acctstarttime,acctstoptime,acctsessiontime,acctinputoctets,acctoutputoctets,acctterminatecause"),
            "{text}"
        );
        assert!(
            !params
                .iter()
                .any(|p| p["name"] == "page" || p["name"] == "limit"),
            "export ignores paging"
        );
    }

    /// Every `$ref` points at something the document defines.
    #[test]
    fn references_resolve() {
        fn walk(v: &Value, doc: &Value, bad: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        let target = r
                            .strip_prefix("#/")
                            .map(|p| p.split('/').fold(doc, |node, key| &node[key]));
                        if !target.is_some_and(Value::is_object) {
                            bad.push(r.clone());
                        }
                    }
                    m.values().for_each(|x| walk(x, doc, bad));
                }
                Value::Array(a) => a.iter().for_each(|x| walk(x, doc, bad)),
                _ => {}
            }
        }
        let doc = build();
        let mut bad = Vec::new();
        walk(&doc, &doc, &mut bad);
        assert!(bad.is_empty(), "unresolved: {bad:?}");
        assert_eq!(doc["openapi"], "3.0.3");
        assert_eq!(
            doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
            "bearer"
        );
    }

    #[test]
    fn session_schema_has_every_field_of_the_view() {
        let doc = build();
        let props = doc["components"]["schemas"]["Session"]["properties"]
            .as_object()
            .unwrap();
        let view_src = include_str!("view.rs");
        let start = view_src.find("pub struct SessionView").unwrap();
        let body = &view_src[start..view_src[start..].find('}').unwrap() + start];
        for line in body.lines().filter(|l| l.trim_start().starts_with("pub ")) {
            let Some(field) = line
                .trim()
                .strip_prefix("pub ")
                .and_then(|l| l.split(':').next())
            else {
                continue;
            };
            if field.starts_with("struct") {
                continue;
            }
            assert!(props.contains_key(field), "Session schema lacks {field}");
        }
    }
}
