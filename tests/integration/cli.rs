//! The `radacctd` binary as an operator runs it: `serve` with no configuration at all,
//! SIGTERM, `check-config`, `migrate`, `nas add|list|remove`, bad configuration.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::radclient;

const BIN: &str = env!("CARGO_BIN_EXE_radacctd");

fn run(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("RADACCTD_DATABASE_URL")
        .env_remove("RADACCTD_LOG")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_no_configuration_runs_on_sqlite_with_the_default_client_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (udp, tcp) = (free_port(), free_tcp_port());
    let mut child = Command::new(BIN)
        .arg("serve")
        .current_dir(dir.path())
        .env_remove("RADACCTD_DATABASE_URL")
        .env("RADACCTD_RADIUS_LISTEN", format!("127.0.0.1:{udp}"))
        .env("RADACCTD_HTTP_LISTEN", format!("127.0.0.1:{tcp}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{udp}").parse().unwrap();
    let mut answered = false;
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let (ok, _) = radclient(
            addr,
            "acct",
            "testing123",
            "Acct-Status-Type = Start\nUser-Name = \"cli\"\nAcct-Session-Id = \"1\"\n",
        )
        .await;
        if ok {
            answered = true;
            break;
        }
    }
    assert!(
        answered,
        "default client 127.0.0.1 / testing123 not answered"
    );
    assert!(
        dir.path().join("radacctd.db").exists(),
        "SQLite file in the working directory"
    );
    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "exit {status}: {stderr}");
    assert!(
        stderr.contains("testing123"),
        "warning about the default client: {stderr}"
    );
    assert!(stderr.contains("shutdown complete"), "{stderr}");
}

#[test]
fn unknown_config_key_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.toml"),
        "[radius]\nlisten = \"127.0.0.1:1813\"\nlisen = 1\n",
    )
    .unwrap();
    let out = run(dir.path(), &["--config", "c.toml", "check-config"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("lisen"), "{}", text(&out));
}

#[test]
fn a_world_readable_config_with_secrets_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        "[[nas]]\nname = \"bng1\"\nip = \"10.0.0.1\"\nsecret = \"s\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(dir.path(), &["--config", "c.toml", "check-config"]);
    assert!(out.status.success());
    assert!(
        text(&out).contains("readable by every user"),
        "{}",
        text(&out)
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = run(dir.path(), &["--config", "c.toml", "check-config"]);
    assert!(
        !text(&out).contains("readable by every user"),
        "{}",
        text(&out)
    );
}

#[test]
fn the_sqlite_database_is_created_owner_only_and_an_exposed_one_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let url = "sqlite://secrets.db";
    let out = run(dir.path(), &["--database-url", url, "migrate"]);
    assert!(out.status.success(), "{}", text(&out));
    let db = dir.path().join("secrets.db");
    let mode = std::fs::metadata(&db).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "new database file mode {mode:o}");
    assert!(
        !text(&out).contains("readable by every user"),
        "{}",
        text(&out)
    );
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(dir.path(), &["--database-url", url, "migrate"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("SQLite database holds NAS secrets"),
        "{}",
        text(&out)
    );
}

#[test]
fn check_config_validates_and_hides_secrets() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.toml"),
        "[database]\nurl = \"postgres://radius:dbpass@db/radius\"\n[auth]\njwt_secret = \"jwtkey\"\n\
         [[nas]]\nname = \"bng1\"\nip = \"10.0.0.1\"\nsecret = \"nassecret\"\n",
    )
    .unwrap();
    let out = run(dir.path(), &["--config", "c.toml", "check-config"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    for secret in ["dbpass", "jwtkey", "nassecret"] {
        assert!(!t.contains(secret), "{secret} printed: {t}");
    }
    assert!(t.contains("bng1") && t.contains("10.0.0.1"), "{t}");
    let bad = run(dir.path(), &["--database-url", "mysql://x", "check-config"]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("database.url"), "{}", text(&bad));
}

#[test]
fn nas_add_list_remove_manage_the_nas_table() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/r.db", dir.path().display());
    let add = run(
        dir.path(),
        &[
            "--database-url",
            &db,
            "nas",
            "add",
            "--name",
            "bng1",
            "--ip",
            "10.0.0.1",
            "--secret",
            "topsecret",
            "--coa-port",
            "3799",
            "--api-user",
            "api",
            "--api-password",
            "apipass",
        ],
    );
    assert!(add.status.success(), "{}", text(&add));
    let list = run(dir.path(), &["--database-url", &db, "nas", "list"]);
    let t = text(&list);
    assert!(list.status.success(), "{t}");
    assert!(
        t.contains("bng1") && t.contains("10.0.0.1") && t.contains("3799"),
        "{t}"
    );
    assert!(
        !t.contains("topsecret") && !t.contains("apipass"),
        "secrets listed: {t}"
    );
    // Same IP again updates, not duplicates.
    let again = run(
        dir.path(),
        &[
            "--database-url",
            &db,
            "nas",
            "add",
            "--name",
            "bng1b",
            "--ip",
            "10.0.0.1",
            "--secret",
            "x",
        ],
    );
    assert!(again.status.success());
    let t = text(&run(dir.path(), &["--database-url", &db, "nas", "list"]));
    assert_eq!(t.matches("10.0.0.1").count(), 1, "{t}");
    assert!(t.contains("bng1b"));
    let rm = run(
        dir.path(),
        &["--database-url", &db, "nas", "remove", "bng1b"],
    );
    assert!(rm.status.success(), "{}", text(&rm));
    let t = text(&run(dir.path(), &["--database-url", &db, "nas", "list"]));
    assert!(!t.contains("10.0.0.1"), "{t}");
    let missing = run(
        dir.path(),
        &["--database-url", &db, "nas", "remove", "nope"],
    );
    assert!(!missing.status.success());
}

/// `nas add --api-tls-fingerprint` stores TLS with the pin (port 8729 by default), `nas
/// list` and `check-config` show the transport and the pin but never the password, and a
/// malformed fingerprint is refused with the flag named.
#[test]
fn nas_add_with_api_ssl_stores_the_pinned_certificate() {
    const PIN: &str = "3a5f0c9e2177b4d86a10e24c935bf1087dc62a99401eb355680df7c2843b6e19";
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/t.db", dir.path().display());
    let base = [
        "--database-url",
        db.as_str(),
        "nas",
        "add",
        "--name",
        "bng1",
        "--ip",
        "10.0.0.1",
        "--secret",
        "topsecret",
        "--api-user",
        "api",
        "--api-password",
        "apipass",
    ];
    let add = run(
        dir.path(),
        &[&base[..], &["--api-tls-fingerprint", PIN]].concat(),
    );
    assert!(add.status.success(), "{}", text(&add));
    let t = text(&run(dir.path(), &["--database-url", &db, "nas", "list"]));
    assert!(t.contains("api@:8729 tls pinned 3A:5F:0C:9E"), "{t}");
    assert!(!t.contains("apipass") && !t.contains("topsecret"), "{t}");

    let unpinned = run(dir.path(), &[&base[..], &["--api-tls"]].concat());
    assert!(unpinned.status.success(), "{}", text(&unpinned));
    let t = text(&run(dir.path(), &["--database-url", &db, "nas", "list"]));
    assert!(t.contains("api@:8729 tls (certificate not pinned)"), "{t}");

    let bad = run(
        dir.path(),
        &[&base[..], &["--api-tls-fingerprint", "12:34"]].concat(),
    );
    assert!(!bad.status.success());
    assert!(
        text(&bad).contains("--api-tls-fingerprint"),
        "{}",
        text(&bad)
    );

    std::fs::write(
        dir.path().join("c.toml"),
        format!(
            "[[nas]]\nname = \"bng1\"\nip = \"10.0.0.1\"\nsecret = \"nassecret\"\n\
             api_user = \"api\"\napi_password = \"apipass\"\napi_tls_fingerprint = \"{PIN}\"\n\
             [[nas]]\nname = \"bng2\"\nip = \"10.0.0.2\"\nsecret = \"nassecret\"\n\
             api_user = \"api\"\napi_password = \"apipass\"\napi_tls = true\n"
        ),
    )
    .unwrap();
    let out = run(dir.path(), &["--config", "c.toml", "check-config"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("api=10.0.0.1:8729 (tls, pinned 3A:5F:0C:9E"),
        "{t}"
    );
    assert!(
        t.contains("api=10.0.0.2:8729 (tls, certificate NOT pinned"),
        "{t}"
    );
    assert!(!t.contains("apipass") && !t.contains("nassecret"), "{t}");
}

#[test]
fn archive_now_runs_the_archiver_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/a.db", dir.path().display());
    let out = run(dir.path(), &["--database-url", &db, "archive", "--now"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("archived 0 sessions"), "{}", text(&out));
    let without = run(dir.path(), &["--database-url", &db, "archive"]);
    assert!(!without.status.success());
}

#[test]
fn resellers_and_subscribers_import_from_csv_files() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/i.db", dir.path().display());
    std::fs::write(
        dir.path().join("r.csv"),
        "id,parent_id,name\n2,1,child\n1,,top\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("s.csv"),
        "username,reseller_id\nann,1\nbob,2\ncat,\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("bad.csv"),
        "username,reseller_id\nann,1\nzed,77\n",
    )
    .unwrap();
    let out = run(
        dir.path(),
        &["--database-url", &db, "resellers", "import", "r.csv"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("imported 2"), "{}", text(&out));
    let out = run(
        dir.path(),
        &["--database-url", &db, "subscribers", "import", "s.csv"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("imported 3"), "{}", text(&out));
    let bad = run(
        dir.path(),
        &["--database-url", &db, "subscribers", "import", "bad.csv"],
    );
    assert!(!bad.status.success());
    assert!(text(&bad).contains("line 3"), "{}", text(&bad));
}

crate::both_backends!(migrate_creates_the_schema);

/// `radacctd migrate` on an empty database: every table of the schema and the indexes the
/// ingest path and the Sessions API need, on both backends; running it again changes
/// nothing.
async fn migrate_creates_the_schema(b: crate::harness::Backend) {
    let db = crate::harness::TestDb::new(b).await;
    let dir = tempfile::tempdir().unwrap();
    for attempt in ["first", "second"] {
        let (path, url) = (dir.path().to_owned(), db.url.clone());
        let out =
            tokio::task::spawn_blocking(move || run(&path, &["--database-url", &url, "migrate"]))
                .await
                .unwrap();
        assert!(out.status.success(), "{attempt} migrate: {}", text(&out));
    }
    let store = radacctd::sessions::Store::connect(&crate::harness::config(&db, "").database)
        .await
        .unwrap();
    for table in [
        "radacct",
        "radacct_archive",
        "radacct_events",
        "radacct_events_archive",
        "nas",
        "subscribers",
        "resellers",
        "audit_log",
    ] {
        // Fails (and panics) if the table is missing.
        crate::harness::scalar(&store, &format!("SELECT COUNT(*) FROM {table}")).await;
    }
    let indexes = match b {
        crate::harness::Backend::Sqlite => {
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name IN \
             ('radacct_open', 'radacct_sessionkey_derived', 'radacct_starttime')"
        }
        crate::harness::Backend::Postgres => {
            "SELECT COUNT(*) FROM pg_indexes WHERE indexname IN \
             ('radacct_open', 'radacct_sessionkey', 'radacct_sort_starttime')"
        }
    };
    assert_eq!(crate::harness::scalar(&store, indexes).await, 3);
}

#[test]
fn malformed_dictionary_stops_start_up_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let dict = dir.path().join("dict");
    std::fs::create_dir(&dict).unwrap();
    std::fs::write(
        dict.join("dictionary"),
        "# ok\nATTRIBUTE User-Name 1 string\nATTRIBUTE Broken\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("c.toml"),
        format!(
            "[radius]\nlisten = \"127.0.0.1:0\"\ndictionary_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n",
            dict.display()
        ),
    )
    .unwrap();
    let out = run(
        dir.path(),
        &[
            "--config",
            "c.toml",
            "--database-url",
            "sqlite://d.db",
            "serve",
        ],
    );
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("dictionary:3"), "file and line named: {t}");
}
