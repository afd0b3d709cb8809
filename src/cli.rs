//! Command line: `serve`, `migrate`, `check-config`, `nas add|list|remove`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::app::Server;
use crate::config::{self, Config, NasConfig, Overrides};
use crate::sessions::Store;

#[derive(Debug, Parser)]
#[command(
    name = "radacctd",
    version,
    about = "RADIUS accounting server with a built-in session store"
)]
pub struct Cli {
    /// TOML configuration file (every key is documented in packaging/radacctd.toml).
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Database URL: sqlite://PATH or postgres://… (overrides RADACCTD_DATABASE_URL).
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Log filter, e.g. info or radacctd=debug (overrides RADACCTD_LOG).
    #[arg(long, global = true, value_name = "FILTER")]
    pub log: Option<String>,
    /// Log format: text or json.
    #[arg(long, global = true, value_name = "FORMAT")]
    pub log_format: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve {
        /// RADIUS accounting address (overrides RADACCTD_RADIUS_LISTEN).
        #[arg(long, value_name = "ADDR")]
        radius_listen: Option<String>,
        /// HTTP API address (overrides RADACCTD_HTTP_LISTEN).
        #[arg(long, value_name = "ADDR")]
        http_listen: Option<String>,
    },
    /// Create or upgrade the database schema and ensure indexes, then exit.
    Migrate,
    /// Validate the configuration and print it (secrets hidden), then exit.
    CheckConfig,
    /// Move sessions closed longer ago than jobs.archive_after_days to the archive tables.
    Archive {
        /// Run now, once (the server also runs it daily at jobs.archive_at).
        #[arg(long)]
        now: bool,
    },
    /// Bulk-import subscribers from a CSV file with the header `username,reseller_id`.
    Subscribers {
        #[command(subcommand)]
        command: ImportCommand,
    },
    /// Bulk-import resellers from a CSV file with the header `id,parent_id,name`.
    Resellers {
        #[command(subcommand)]
        command: ImportCommand,
    },
    /// Print a signed JWT for the Sessions API (HS256 with the configured secret).
    Token(TokenArgs),
    /// Manage NAS clients in the database.
    Nas {
        #[command(subcommand)]
        command: NasCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum NasCommand {
    /// Add a NAS, or update the one with the same IP address.
    Add(NasAdd),
    /// List NAS clients (secrets hidden).
    List,
    /// Remove a NAS by name or IP address.
    Remove {
        /// Name (shortname) or IP address.
        name_or_ip: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Insert or update every row of the file in one transaction (all or nothing).
    Import {
        /// The CSV file (`-` for standard input).
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// admin, reseller or subscriber.
    #[arg(long)]
    pub role: String,
    /// The reseller's id (required for --role reseller).
    #[arg(long)]
    pub reseller_id: Option<i64>,
    /// The subscriber's username (required for --role subscriber).
    #[arg(long)]
    pub username: Option<String>,
    /// Comma-separated permissions; default: the role's usual set.
    #[arg(long, value_delimiter = ',')]
    pub permissions: Option<Vec<String>>,
    /// Lifetime, e.g. 90s, 30m, 1h, 7d.
    #[arg(long, default_value = "1h")]
    pub ttl: String,
    /// The `sub` claim (who the token is for; written to the audit log).
    #[arg(long, default_value = "radacctd-cli")]
    pub sub: String,
}

#[derive(Debug, Args)]
pub struct NasAdd {
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub ip: IpAddr,
    #[arg(long)]
    pub secret: String,
    #[arg(long, default_value_t = config::DEFAULT_COA_PORT)]
    pub coa_port: u16,
    #[arg(long)]
    pub api_user: Option<String>,
    #[arg(long)]
    pub api_password: Option<String>,
    /// RouterOS API port; default 8728, or 8729 with --api-tls.
    #[arg(long)]
    pub api_port: Option<u16>,
    /// Use RouterOS API-SSL (TLS) for the disconnect fallback.
    #[arg(long)]
    pub api_tls: bool,
    /// SHA-256 fingerprint of the router's API certificate (implies --api-tls); only that
    /// certificate is then accepted.
    #[arg(long)]
    pub api_tls_fingerprint: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("radacctd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // A SQLite commit the writer abandoned at the shutdown deadline may still be waiting
    // on the disk in a blocking thread; its records are unanswered, so exiting need not
    // wait for it (dropping the runtime would, without limit).
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("radacctd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let (radius_listen, http_listen) = match &cli.command {
        Command::Serve {
            radius_listen,
            http_listen,
        } => (radius_listen.clone(), http_listen.clone()),
        _ => (None, None),
    };
    let flags = Overrides {
        database_url: cli.database_url.clone(),
        radius_listen,
        http_listen,
        jwt_secret: None,
        log_filter: cli.log.clone(),
        log_format: cli.log_format.clone(),
    };
    let config = Config::load(cli.config.as_deref(), flags)?;
    crate::telemetry::init(&config.log_filter, config.log_format).map_err(anyhow::Error::msg)?;

    if let Some(path) = &cli.config {
        warn_if_exposed(path, &config);
    }
    match cli.command {
        Command::Serve { .. } => serve(config).await,
        Command::Migrate => {
            let store = Store::connect(&config.database).await?;
            store.migrate().await?;
            println!("database is up to date ({})", store.backend());
            store.close().await;
            Ok(())
        }
        Command::CheckConfig => check_config(&config),
        Command::Archive { now } => {
            if !now {
                anyhow::bail!("use `radacctd archive --now` to archive immediately");
            }
            let store = Store::connect(&config.database).await?;
            // The schema, not the API indexes: on a large table a missing index would make
            // this command wait for its build (`radacctd migrate` or `serve` build them).
            store.migrate_for_ingest().await?;
            let archiver = crate::jobs::archiver::Archiver {
                store: store.clone(),
                at: config.jobs.archive_at,
                after: config.jobs.archive_after,
                batch_size: config.jobs.archive_batch_size,
            };
            let stop = tokio_util::sync::CancellationToken::new();
            let n = archiver
                .run_once(chrono::Utc::now().timestamp(), &stop)
                .await?;
            println!("archived {n} sessions");
            store.close().await;
            Ok(())
        }
        Command::Subscribers {
            command: ImportCommand::Import { file },
        } => import(&config, &file, false).await,
        Command::Resellers {
            command: ImportCommand::Import { file },
        } => import(&config, &file, true).await,
        Command::Token(args) => {
            println!("{}", token(&config, args)?);
            Ok(())
        }
        Command::Nas { command } => nas(config, command).await,
    }
}

/// A config file holding secrets (NAS secrets, the JWT key, RouterOS passwords, a database
/// password) should not be readable by every local user: say so at start, once.
fn warn_if_exposed(path: &std::path::Path, config: &Config) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let holds_secrets = !config.nas.is_empty()
            || config.jwt_secret.is_some()
            || redact_url(&config.database.url) != config.database.url;
        if let Ok(meta) = std::fs::metadata(path)
            && holds_secrets
            && meta.permissions().mode() & 0o004 != 0
        {
            tracing::warn!(
                file = %path.display(),
                "the configuration file holds secrets and is readable by every user; \
                 chmod o-r it (the Debian package installs it root:radacctd 0640)"
            );
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let server = Server::start(config).await?;
    let token = server.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received");
        token.cancel();
    });
    server.wait().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn check_config(config: &Config) -> anyhow::Result<()> {
    println!("configuration is valid");
    println!("database.url = {}", redact_url(&config.database.url));
    println!("radius.listen = {}", config.radius.listen);
    println!("radius.default_client = {}", config.radius.default_client);
    println!("http.listen = {}", config.http_listen);
    println!(
        "auth.jwt_secret = {}",
        if config.jwt_secret.is_some() {
            "<set>"
        } else {
            "<unset>"
        }
    );
    for nas in &config.nas {
        let api = match (&nas.api_user, nas.api_tls, &nas.api_tls_fingerprint) {
            (None, ..) => String::new(),
            (Some(_), false, _) => format!(" api={}:{} (plain)", nas.ip, nas.api_port),
            (Some(_), true, None) => format!(
                " api={}:{} (tls, certificate NOT pinned: set api_tls_fingerprint)",
                nas.ip, nas.api_port
            ),
            (Some(_), true, Some(pin)) => format!(
                " api={}:{} (tls, pinned {})",
                nas.ip,
                nas.api_port,
                crate::coa::tls::format_fingerprint(pin)
            ),
        };
        println!(
            "nas {} {} coa_port={} secret=<hidden>{api}",
            nas.name, nas.ip, nas.coa_port
        );
    }
    Ok(())
}

async fn import(config: &Config, file: &std::path::Path, resellers: bool) -> anyhow::Result<()> {
    let csv = if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    let store = Store::connect(&config.database).await?;
    store.migrate_for_ingest().await?;
    let result = if resellers {
        crate::api::admin::import_resellers_csv(&store, &csv).await
    } else {
        crate::api::admin::import_subscribers_csv(&store, &csv).await
    };
    store.close().await;
    let n = result.map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    println!("imported {n}");
    Ok(())
}

fn token(config: &Config, a: TokenArgs) -> anyhow::Result<String> {
    use crate::api::auth::{Claims, Role, mint_hs256, now_secs};
    let role = match a.role.as_str() {
        "admin" => Role::Admin,
        "reseller" => Role::Reseller,
        "subscriber" => Role::Subscriber,
        other => anyhow::bail!("--role {other:?} is not one of admin, reseller, subscriber"),
    };
    if role == Role::Reseller && a.reseller_id.is_none() {
        anyhow::bail!("--role reseller needs --reseller-id");
    }
    if role == Role::Subscriber && a.username.as_deref().is_none_or(str::is_empty) {
        anyhow::bail!("--role subscriber needs --username");
    }
    if config.auth.algorithm != config::JwtAlgorithm::Hs256 {
        anyhow::bail!("radacctd only verifies RS256/EdDSA tokens; mint them with the private key");
    }
    let secret = config
        .jwt_secret
        .as_deref()
        .context("no JWT secret configured (auth.jwt_secret or RADACCTD_JWT_SECRET)")?;
    let ttl = parse_duration(&a.ttl).with_context(|| format!("--ttl {:?}", a.ttl))?;
    let permissions = a.permissions.unwrap_or_else(|| {
        role.default_permissions()
            .iter()
            .map(|p| p.to_string())
            .collect()
    });
    let now = now_secs();
    let claims = Claims {
        sub: a.sub,
        role,
        reseller_id: a.reseller_id,
        username: a.username,
        permissions,
        exp: now + ttl,
        iat: Some(now),
        aud: config.auth.audience.clone().map(Into::into),
        iss: config.auth.issuer.clone(),
    };
    Ok(mint_hs256(secret, &claims)?)
}

/// `90s`, `30m`, `1h`, `7d` or plain seconds.
pub fn parse_duration(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .context("expected a number followed by s, m, h or d")?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => anyhow::bail!("unknown unit {unit:?}; use s, m, h or d"),
    };
    n.checked_mul(mult)
        .filter(|&v| v > 0)
        .context("duration must be positive and not absurdly large")
}

/// Hide a password in `postgres://user:password@host/db`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

async fn nas(config: Config, command: NasCommand) -> anyhow::Result<()> {
    let store = Store::connect(&config.database).await?;
    store.migrate_for_ingest().await?;
    let result = match command {
        NasCommand::Add(a) => {
            if a.secret.is_empty() {
                anyhow::bail!("--secret must not be empty");
            }
            let (api_tls, api_tls_fingerprint) =
                config::nas_api_tls(a.api_tls.then_some(true), a.api_tls_fingerprint.as_deref())
                    .map_err(|(field, why)| {
                        anyhow::anyhow!("--{}: {why}", field.replace('_', "-"))
                    })?;
            let api_port = a.api_port.unwrap_or(if api_tls {
                config::DEFAULT_API_TLS_PORT
            } else {
                config::DEFAULT_API_PORT
            });
            let id = store
                .nas_upsert(&NasConfig {
                    name: a.name.clone(),
                    ip: a.ip,
                    secret: a.secret,
                    coa_port: a.coa_port,
                    api_user: a.api_user,
                    api_password: a.api_password,
                    api_port,
                    api_tls,
                    api_tls_fingerprint,
                    description: a.description,
                })
                .await
                .context("cannot store the NAS")?;
            println!("nas {} ({}) saved with id {id}", a.name, a.ip);
            Ok(())
        }
        NasCommand::List => {
            let rows = store.nas_list().await?;
            println!(
                "{:<6} {:<20} {:<40} {:<9} api",
                "id", "name", "ip", "coa_port"
            );
            for r in rows {
                let api = match &r.config.api_user {
                    Some(u) => {
                        let tls = match (r.config.api_tls, r.config.api_tls_fingerprint) {
                            (false, _) => String::new(),
                            (true, None) => " tls (certificate not pinned)".to_owned(),
                            (true, Some(pin)) => {
                                format!(" tls pinned {}", crate::coa::tls::format_fingerprint(&pin))
                            }
                        };
                        format!("{u}@:{}{tls}", r.config.api_port)
                    }
                    None => "-".to_owned(),
                };
                println!(
                    "{:<6} {:<20} {:<40} {:<9} {api}",
                    r.id, r.config.name, r.config.ip, r.config.coa_port
                );
            }
            Ok(())
        }
        NasCommand::Remove { name_or_ip } => {
            let n = store.nas_remove(&name_or_ip).await?;
            if n == 0 {
                anyhow::bail!("no NAS named {name_or_ip:?}");
            }
            println!("removed {n} NAS");
            Ok(())
        }
    };
    store.close().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_in_urls() {
        assert_eq!(
            redact_url("postgres://radius:s3cret@db:5432/radius"),
            "postgres://radius:***@db:5432/radius"
        );
        assert_eq!(redact_url("sqlite://radacctd.db"), "sqlite://radacctd.db");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s").unwrap(), 90);
        assert_eq!(parse_duration("1h").unwrap(), 3600);
        assert_eq!(parse_duration("7d").unwrap(), 604_800);
        assert_eq!(parse_duration("15").unwrap(), 15);
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn cli_parses_documented_commands() {
        Cli::try_parse_from(["radacctd", "serve", "--radius-listen", "127.0.0.1:0"]).unwrap();
        Cli::try_parse_from([
            "radacctd",
            "nas",
            "add",
            "--name",
            "bng1",
            "--ip",
            "10.0.0.1",
            "--secret",
            "x",
            "--coa-port",
            "3799",
            "--api-user",
            "u",
            "--api-password",
            "p",
            "--api-port",
            "8729",
        ])
        .unwrap();
        Cli::try_parse_from(["radacctd", "nas", "remove", "bng1"]).unwrap();
        Cli::try_parse_from([
            "radacctd",
            "token",
            "--role",
            "reseller",
            "--reseller-id",
            "3",
            "--permissions",
            "sessions.view,sessions.view_all",
            "--ttl",
            "2h",
        ])
        .unwrap();
        assert!(Cli::try_parse_from(["radacctd", "nas", "add", "--ip", "nope"]).is_err());
    }
}
