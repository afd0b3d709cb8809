//! Configuration: the TOML file (`--config`), then `RADACCTD_*` environment variables,
//! then command-line flags, each layer overriding the one before.
//!
//! The file is parsed into wire structs (`FileConfig`, unknown keys are an error) and
//! validated into [`Config`], whose fields are the typed values the rest of the program
//! uses. Every key is documented in `packaging/radacctd.toml`; keep the two in step.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Where the store lives when nothing else is configured: a SQLite file in the working
/// directory, so that `radacctd serve` works on a fresh machine with no setup.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://radacctd.db";
pub const DEFAULT_RADIUS_LISTEN: &str = "0.0.0.0:1813";
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:8080";
/// The FreeRADIUS convention for a localhost test client.
pub const DEFAULT_CLIENT_SECRET: &str = "testing123";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value for {key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// The file as written. Every section and key is optional; defaults live in
/// [`Config::try_from`], so that the defaults are stated once.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub database: DatabaseSection,
    #[serde(default)]
    pub radius: RadiusSection,
    #[serde(default)]
    pub writer: WriterSection,
    #[serde(default)]
    pub http: HttpSection,
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub jobs: JobsSection,
    #[serde(default)]
    pub nas: Vec<NasSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsSection {
    pub sweeper: Option<bool>,
    pub sweep_interval_secs: Option<u64>,
    pub stale_after_secs: Option<u64>,
    pub archiver: Option<bool>,
    pub archive_at: Option<String>,
    pub archive_after_days: Option<u64>,
    pub archive_batch_size: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    pub url: Option<String>,
    pub max_connections: Option<u32>,
    pub sqlite_synchronous: Option<String>,
    pub connect_timeout_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RadiusSection {
    pub listen: Option<String>,
    pub recv_buffer_bytes: Option<usize>,
    pub default_client: Option<bool>,
    pub duplicate_window_secs: Option<u64>,
    pub event_timestamp_skew_secs: Option<u64>,
    pub session_start_tolerance_secs: Option<u64>,
    pub dictionary_dir: Option<PathBuf>,
    pub nas_reload_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriterSection {
    pub max_batch: Option<usize>,
    pub queue_capacity: Option<usize>,
    pub retry_max_backoff_ms: Option<u64>,
    pub shutdown_grace_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    pub listen: Option<String>,
    pub rate_limit_per_minute: Option<u32>,
    pub trusted_proxies: Option<Vec<String>>,
    pub max_concurrent_exports: Option<usize>,
    pub metrics_listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    pub jwt_secret: Option<String>,
    pub jwt_algorithm: Option<String>,
    pub jwt_public_key_file: Option<PathBuf>,
    pub audience: Option<String>,
    pub issuer: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub filter: Option<String>,
    pub format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NasSection {
    pub name: String,
    pub ip: String,
    pub secret: String,
    pub coa_port: Option<u16>,
    pub api_user: Option<String>,
    pub api_password: Option<String>,
    pub api_port: Option<u16>,
    pub api_tls: Option<bool>,
    pub api_tls_fingerprint: Option<String>,
    pub description: Option<String>,
}

/// Overrides from the environment and the command line; `None` leaves the file's value.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub database_url: Option<String>,
    pub radius_listen: Option<String>,
    pub http_listen: Option<String>,
    pub jwt_secret: Option<String>,
    pub log_filter: Option<String>,
    pub log_format: Option<String>,
}

impl Overrides {
    /// The `RADACCTD_*` variables of DESIGN.md §2. Empty values count as unset, so that
    /// `RADACCTD_LOG=` in a unit file does not silence logging by accident.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Overrides {
            database_url: var("RADACCTD_DATABASE_URL"),
            radius_listen: var("RADACCTD_RADIUS_LISTEN"),
            http_listen: var("RADACCTD_HTTP_LISTEN"),
            jwt_secret: var("RADACCTD_JWT_SECRET"),
            log_filter: var("RADACCTD_LOG"),
            log_format: var("RADACCTD_LOG_FORMAT"),
        }
    }

    /// Layer `other` on top of `self`.
    pub fn overlay(self, other: Overrides) -> Overrides {
        Overrides {
            database_url: other.database_url.or(self.database_url),
            radius_listen: other.radius_listen.or(self.radius_listen),
            http_listen: other.http_listen.or(self.http_listen),
            jwt_secret: other.jwt_secret.or(self.jwt_secret),
            log_filter: other.log_filter.or(self.log_filter),
            log_format: other.log_format.or(self.log_format),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqliteSynchronous {
    /// Survives power loss in WAL mode: every commit is fsynced. The default, because
    /// an acknowledged accounting record must never be lost.
    Full,
    /// Survives a process crash but may lose the last commits on power loss.
    Normal,
    Extra,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub database: DatabaseConfig,
    pub radius: RadiusConfig,
    pub writer: WriterConfig,
    pub http_listen: SocketAddr,
    pub http: HttpConfig,
    pub jwt_secret: Option<String>,
    pub auth: AuthConfig,
    pub log_filter: String,
    pub log_format: LogFormat,
    pub jobs: JobsConfig,
    pub nas: Vec<NasConfig>,
}

/// Background jobs (DESIGN.md §7).
#[derive(Debug, Clone)]
pub struct JobsConfig {
    pub sweeper: bool,
    pub sweep_interval: Duration,
    /// An open session not updated for this long is closed as NAS-Idle-Timeout.
    pub stale_after: Duration,
    pub archiver: bool,
    /// Local time of day the archiver runs, as (hour, minute).
    pub archive_at: (u32, u32),
    pub archive_after: Duration,
    pub archive_batch_size: i64,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: String,
    pub max_connections: u32,
    pub sqlite_synchronous: SqliteSynchronous,
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct RadiusConfig {
    pub listen: SocketAddr,
    /// SO_RCVBUF for the accounting socket. A burst of 256 in-flight requests of up to
    /// 4 KiB each must fit without kernel drops (DESIGN.md §9).
    pub recv_buffer_bytes: usize,
    pub default_client: bool,
    pub duplicate_window: Duration,
    pub event_timestamp_skew: Duration,
    pub session_start_tolerance: Duration,
    pub dictionary_dir: Option<PathBuf>,
    pub nas_reload: Duration,
}

#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub max_batch: usize,
    pub queue_capacity: usize,
    pub retry_max_backoff: Duration,
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Requests per minute per client address on `/api/*` (the contract's 300).
    pub rate_limit_per_minute: u32,
    /// Peers whose `X-Forwarded-For` / `X-Real-IP` are believed (reverse proxies).
    pub trusted_proxies: Vec<IpNet>,
    /// CSV exports streaming at once; each holds a database connection for its whole
    /// duration, so the excess gets 429 instead of starving ingest and the API.
    pub max_concurrent_exports: usize,
    /// A separate address serving only `/metrics` (it is also on the API listener).
    pub metrics_listen: Option<SocketAddr>,
}

/// JWT verification settings (the key itself is `Config::jwt_secret` or the public key).
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub algorithm: JwtAlgorithm,
    pub public_key_file: Option<PathBuf>,
    pub audience: Option<String>,
    pub issuer: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    Hs256,
    Rs256,
    EdDsa,
}

/// An address or CIDR block, e.g. `10.0.0.0/8` or `127.0.0.1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    pub fn parse(s: &str) -> Option<IpNet> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, p.parse::<u8>().ok()?),
            None => {
                let a: IpAddr = s.parse().ok()?;
                (a, if a.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(IpNet { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct NasConfig {
    pub name: String,
    pub ip: IpAddr,
    pub secret: String,
    pub coa_port: u16,
    pub api_user: Option<String>,
    pub api_password: Option<String>,
    pub api_port: u16,
    /// RouterOS API-SSL (TLS) instead of the plain API.
    pub api_tls: bool,
    /// SHA-256 of the router's API certificate; with `api_tls`, only that certificate
    /// is accepted. Without it the TLS peer is not authenticated (see `coa::tls`).
    pub api_tls_fingerprint: Option<[u8; 32]>,
    pub description: Option<String>,
}

// Hand-written so that secrets never reach a log line through `{:?}`.
impl std::fmt::Debug for NasConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NasConfig")
            .field("name", &self.name)
            .field("ip", &self.ip)
            .field("secret", &"<redacted>")
            .field("coa_port", &self.coa_port)
            .field("api_user", &self.api_user)
            .field("api_port", &self.api_port)
            .field("api_tls", &self.api_tls)
            .field(
                "api_tls_fingerprint",
                &self
                    .api_tls_fingerprint
                    .as_ref()
                    .map(crate::coa::tls::format_fingerprint),
            )
            .finish()
    }
}

pub const DEFAULT_COA_PORT: u16 = 1700;
pub const DEFAULT_API_PORT: u16 = 8728;
pub const DEFAULT_API_TLS_PORT: u16 = crate::coa::tls::DEFAULT_API_SSL_PORT;

/// `(api_tls, api_tls_fingerprint)` of one NAS, or the offending key and why not.
pub type ApiTlsSettings = Result<(bool, Option<[u8; 32]>), (&'static str, String)>;

/// Resolves the RouterOS API transport settings of one NAS: a fingerprint implies TLS,
/// and TLS moves the default port to 8729. `Err` carries the offending key and why.
pub fn nas_api_tls(api_tls: Option<bool>, fingerprint: Option<&str>) -> ApiTlsSettings {
    let pin = match fingerprint.map(str::trim).filter(|f| !f.is_empty()) {
        None => None,
        Some(f) => Some(
            crate::coa::tls::parse_fingerprint(f).ok_or((
                "api_tls_fingerprint",
                "must be a SHA-256 fingerprint: 64 hex digits, colons allowed \
             (`/certificate print detail` or `openssl x509 -noout -fingerprint -sha256`)"
                    .to_owned(),
            ))?,
        ),
    };
    match (api_tls, pin) {
        (Some(false), Some(_)) => Err((
            "api_tls_fingerprint",
            "is set but api_tls = false; a pinned certificate needs api_tls = true".to_owned(),
        )),
        (tls, pin) => Ok((tls.unwrap_or(pin.is_some()), pin)),
    }
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }
}

fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .parse()
        .map_err(|_| invalid(key, format!("{value:?} is not an IP:port address")))
}

fn positive(key: &str, value: u64) -> Result<u64, ConfigError> {
    if value == 0 {
        return Err(invalid(key, "must be greater than 0"));
    }
    Ok(value)
}

impl Config {
    /// Validate the file's values with the overrides applied on top.
    pub fn build(file: FileConfig, overrides: Overrides) -> Result<Self, ConfigError> {
        // Destructured so that a new section cannot be added and silently ignored.
        let FileConfig {
            database,
            radius,
            writer,
            http,
            auth,
            log,
            jobs,
            nas,
        } = file;

        let url = overrides
            .database_url
            .or(database.url)
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database.url",
                "must start with sqlite:// or postgres://",
            ));
        }
        let sqlite_synchronous = match database.sqlite_synchronous.as_deref() {
            None | Some("full") => SqliteSynchronous::Full,
            Some("normal") => SqliteSynchronous::Normal,
            Some("extra") => SqliteSynchronous::Extra,
            Some(other) => {
                return Err(invalid(
                    "database.sqlite_synchronous",
                    format!("{other:?} is not one of full, normal, extra"),
                ));
            }
        };
        let max_connections = database.max_connections.unwrap_or(8);
        if max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        let database = DatabaseConfig {
            url,
            max_connections,
            sqlite_synchronous,
            connect_timeout: Duration::from_secs(positive(
                "database.connect_timeout_secs",
                database.connect_timeout_secs.unwrap_or(5),
            )?),
        };

        let listen = overrides
            .radius_listen
            .or(radius.listen)
            .unwrap_or_else(|| DEFAULT_RADIUS_LISTEN.to_owned());
        let radius = RadiusConfig {
            listen: parse_addr("radius.listen", &listen)?,
            recv_buffer_bytes: radius.recv_buffer_bytes.unwrap_or(8 * 1024 * 1024),
            default_client: radius.default_client.unwrap_or(true),
            duplicate_window: Duration::from_secs(positive(
                "radius.duplicate_window_secs",
                radius.duplicate_window_secs.unwrap_or(30),
            )?),
            event_timestamp_skew: Duration::from_secs(
                radius.event_timestamp_skew_secs.unwrap_or(300),
            ),
            session_start_tolerance: Duration::from_secs(
                radius.session_start_tolerance_secs.unwrap_or(60),
            ),
            dictionary_dir: radius.dictionary_dir,
            nas_reload: Duration::from_secs(positive(
                "radius.nas_reload_secs",
                radius.nas_reload_secs.unwrap_or(10),
            )?),
        };

        let max_batch = writer.max_batch.unwrap_or(2048);
        if max_batch == 0 {
            return Err(invalid("writer.max_batch", "must be at least 1"));
        }
        let queue_capacity = writer.queue_capacity.unwrap_or(65_536);
        if queue_capacity < max_batch {
            return Err(invalid(
                "writer.queue_capacity",
                "must be at least writer.max_batch",
            ));
        }
        let writer = WriterConfig {
            max_batch,
            queue_capacity,
            retry_max_backoff: Duration::from_millis(positive(
                "writer.retry_max_backoff_ms",
                writer.retry_max_backoff_ms.unwrap_or(2000),
            )?),
            shutdown_grace: Duration::from_secs(writer.shutdown_grace_secs.unwrap_or(10)),
        };

        let http_listen = overrides
            .http_listen
            .or(http.listen)
            .unwrap_or_else(|| DEFAULT_HTTP_LISTEN.to_owned());
        let http_listen = parse_addr("http.listen", &http_listen)?;
        let trusted_proxies = http
            .trusted_proxies
            .unwrap_or_default()
            .iter()
            .map(|p| {
                IpNet::parse(p).ok_or_else(|| {
                    invalid(
                        "http.trusted_proxies",
                        format!("{p:?} is not an address or CIDR"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let http_config = HttpConfig {
            rate_limit_per_minute: http.rate_limit_per_minute.unwrap_or(300),
            trusted_proxies,
            max_concurrent_exports: http.max_concurrent_exports.unwrap_or(2),
            metrics_listen: http
                .metrics_listen
                .filter(|s| !s.is_empty())
                .map(|s| parse_addr("http.metrics_listen", &s))
                .transpose()?,
        };
        if http_config.max_concurrent_exports == 0
            || http_config.max_concurrent_exports as u32 >= database.max_connections
        {
            return Err(invalid(
                "http.max_concurrent_exports",
                "must be at least 1 and less than database.max_connections",
            ));
        }
        let algorithm = match auth.jwt_algorithm.as_deref() {
            None | Some("HS256") => JwtAlgorithm::Hs256,
            Some("RS256") => JwtAlgorithm::Rs256,
            Some("EdDSA") => JwtAlgorithm::EdDsa,
            Some(other) => {
                return Err(invalid(
                    "auth.jwt_algorithm",
                    format!("{other:?} is not one of HS256, RS256, EdDSA"),
                ));
            }
        };
        if algorithm != JwtAlgorithm::Hs256 && auth.jwt_public_key_file.is_none() {
            return Err(invalid(
                "auth.jwt_public_key_file",
                "is required when auth.jwt_algorithm is RS256 or EdDSA",
            ));
        }
        let auth_config = AuthConfig {
            algorithm,
            public_key_file: auth.jwt_public_key_file,
            audience: auth.audience.filter(|a| !a.is_empty()),
            issuer: auth.issuer.filter(|i| !i.is_empty()),
        };

        let jwt_secret = overrides
            .jwt_secret
            .or(auth.jwt_secret)
            .filter(|s| !s.is_empty());

        let log_filter = overrides
            .log_filter
            .or(log.filter)
            .unwrap_or_else(|| "info".to_owned());
        let log_format = match overrides.log_format.or(log.format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(invalid(
                    "log.format",
                    format!("{other:?} is not one of text, json"),
                ));
            }
        };

        let archive_at = match jobs.archive_at.as_deref() {
            None => (3, 0),
            Some(t) => t
                .split_once(':')
                .and_then(|(h, m)| Some((h.parse::<u32>().ok()?, m.parse::<u32>().ok()?)))
                .filter(|&(h, m)| h < 24 && m < 60)
                .ok_or_else(|| invalid("jobs.archive_at", format!("{t:?} is not HH:MM")))?,
        };
        let archive_batch_size = jobs.archive_batch_size.unwrap_or(1000);
        if !(1..=100_000).contains(&archive_batch_size) {
            return Err(invalid(
                "jobs.archive_batch_size",
                "must be between 1 and 100000",
            ));
        }
        let jobs = JobsConfig {
            sweeper: jobs.sweeper.unwrap_or(true),
            sweep_interval: Duration::from_secs(positive(
                "jobs.sweep_interval_secs",
                jobs.sweep_interval_secs.unwrap_or(300),
            )?),
            stale_after: Duration::from_secs(positive(
                "jobs.stale_after_secs",
                jobs.stale_after_secs.unwrap_or(1800),
            )?),
            archiver: jobs.archiver.unwrap_or(true),
            archive_at,
            archive_after: Duration::from_secs(
                positive(
                    "jobs.archive_after_days",
                    jobs.archive_after_days.unwrap_or(90),
                )? * 86_400,
            ),
            archive_batch_size,
        };

        let mut nas_out = Vec::with_capacity(nas.len());
        for (i, n) in nas.into_iter().enumerate() {
            let key = |field: &str| format!("nas[{i}].{field}");
            let ip: IpAddr =
                n.ip.parse()
                    .map_err(|_| invalid(&key("ip"), format!("{:?} is not an IP address", n.ip)))?;
            if n.secret.is_empty() {
                return Err(invalid(&key("secret"), "must not be empty"));
            }
            if n.name.trim().is_empty() {
                return Err(invalid(&key("name"), "must not be empty"));
            }
            if nas_out.iter().any(|o: &NasConfig| o.ip == ip) {
                return Err(invalid(&key("ip"), format!("{ip} is listed twice")));
            }
            let (api_tls, api_tls_fingerprint) =
                nas_api_tls(n.api_tls, n.api_tls_fingerprint.as_deref())
                    .map_err(|(field, why)| invalid(&key(field), why))?;
            let default_api_port = if api_tls {
                DEFAULT_API_TLS_PORT
            } else {
                DEFAULT_API_PORT
            };
            nas_out.push(NasConfig {
                name: n.name,
                ip,
                secret: n.secret,
                coa_port: n.coa_port.unwrap_or(DEFAULT_COA_PORT),
                api_user: n.api_user,
                api_password: n.api_password,
                api_port: n.api_port.unwrap_or(default_api_port),
                api_tls,
                api_tls_fingerprint,
                description: n.description,
            });
        }

        Ok(Config {
            database,
            radius,
            writer,
            http_listen,
            http: http_config,
            jwt_secret,
            auth: auth_config,
            log_filter,
            log_format,
            jobs,
            nas: nas_out,
        })
    }

    /// Load from an optional file plus environment plus flags.
    pub fn load(path: Option<&Path>, flags: Overrides) -> Result<Self, ConfigError> {
        let file = match path {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        Config::build(file, Overrides::from_env().overlay(flags))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::build(
            FileConfig::parse(Path::new("t.toml"), text)?,
            Overrides::default(),
        )
    }

    #[test]
    fn empty_config_gives_documented_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.database.url, DEFAULT_DATABASE_URL);
        assert_eq!(c.radius.listen.to_string(), DEFAULT_RADIUS_LISTEN);
        assert_eq!(c.http_listen.to_string(), DEFAULT_HTTP_LISTEN);
        assert!(c.radius.default_client);
        assert_eq!(c.database.sqlite_synchronous, SqliteSynchronous::Full);
        assert_eq!(c.radius.event_timestamp_skew, Duration::from_secs(300));
        assert_eq!(c.radius.session_start_tolerance, Duration::from_secs(60));
    }

    #[test]
    fn unknown_key_is_an_error() {
        let err = parse("[radius]\nlisten = \"0.0.0.0:1813\"\nlsten = 1\n").unwrap_err();
        assert!(err.to_string().contains("lsten"), "{err}");
        let err = parse("[radiuss]\n").unwrap_err();
        assert!(err.to_string().contains("radiuss"), "{err}");
    }

    #[test]
    fn flags_override_environment_override_file() {
        let file = FileConfig::parse(
            Path::new("t.toml"),
            "[http]\nlisten = \"127.0.0.1:1\"\n[radius]\nlisten = \"127.0.0.1:2\"\n",
        )
        .unwrap();
        let env = Overrides {
            http_listen: Some("127.0.0.1:3".into()),
            ..Default::default()
        };
        let flags = Overrides {
            radius_listen: Some("127.0.0.1:4".into()),
            ..Default::default()
        };
        let c = Config::build(file, env.overlay(flags)).unwrap();
        assert_eq!(c.http_listen.port(), 3);
        assert_eq!(c.radius.listen.port(), 4);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("[radius]\nlisten = \"nope\"", "radius.listen"),
            ("[database]\nurl = \"mysql://x\"", "database.url"),
            (
                "[database]\nsqlite_synchronous = \"off\"",
                "sqlite_synchronous",
            ),
            ("[log]\nformat = \"xml\"", "log.format"),
            (
                "[[nas]]\nname = \"a\"\nip = \"10.0.0.300\"\nsecret = \"s\"",
                "nas[0].ip",
            ),
            (
                "[[nas]]\nname = \"a\"\nip = \"10.0.0.1\"\nsecret = \"\"",
                "nas[0].secret",
            ),
            ("[writer]\nmax_batch = 0", "writer.max_batch"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    /// The documented example must stay loadable, with its commented-out keys enabled too,
    /// so that the documentation cannot drift from the keys the parser accepts.
    #[test]
    fn packaged_example_config_parses_with_every_key_enabled() {
        let text = include_str!("../packaging/radacctd.toml");
        parse(text).unwrap();
        let enabled: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest.starts_with("[[nas]]")
                        || rest
                            .split_once(" = ")
                            .is_some_and(|(k, _)| !k.contains(' ') && !k.is_empty()) =>
                {
                    rest
                }
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let c = parse(&enabled).unwrap();
        assert_eq!(c.nas.len(), 1);
        assert!(c.jwt_secret.is_some());
        assert!(c.radius.dictionary_dir.is_some());
        assert_eq!(c.nas[0].api_user.as_deref(), Some("radacctd"));
    }

    #[test]
    fn cidr_blocks_match_addresses() {
        let net = IpNet::parse("10.0.0.0/8").unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(
            IpNet::parse("127.0.0.1")
                .unwrap()
                .contains("::ffff:127.0.0.1".parse().unwrap())
        );
        assert!(
            IpNet::parse("::1/128")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        assert!(
            IpNet::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(IpNet::parse("10.0.0.0/33").is_none());
        assert!(IpNet::parse("nope").is_none());
    }

    #[test]
    fn nas_debug_output_hides_secrets() {
        let c = parse(
            "[[nas]]\nname = \"bng1\"\nip = \"10.0.0.1\"\nsecret = \"s3cr3t\"\napi_password = \"pw\"",
        )
        .unwrap();
        let dbg = format!("{:?}", c.nas[0]);
        assert!(!dbg.contains("s3cr3t") && !dbg.contains("pw\""), "{dbg}");
        assert_eq!(c.nas[0].coa_port, DEFAULT_COA_PORT);
        assert!(!c.nas[0].api_tls);
        assert_eq!(c.nas[0].api_port, DEFAULT_API_PORT);
    }

    const NAS: &str = "[[nas]]\nname = \"bng1\"\nip = \"10.0.0.1\"\nsecret = \"s\"\n";
    const PIN: &str = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:\
                       AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89";

    #[test]
    fn api_tls_moves_the_default_port_and_a_fingerprint_implies_it() {
        let c = parse(&format!("{NAS}api_tls = true")).unwrap();
        assert!(c.nas[0].api_tls);
        assert_eq!(c.nas[0].api_port, 8729);
        assert_eq!(c.nas[0].api_tls_fingerprint, None);

        let c = parse(&format!("{NAS}api_tls_fingerprint = \"{PIN}\"")).unwrap();
        assert!(c.nas[0].api_tls, "a pin means TLS");
        assert_eq!(c.nas[0].api_port, 8729);
        let pin = c.nas[0].api_tls_fingerprint.unwrap();
        assert_eq!(
            crate::coa::tls::format_fingerprint(&pin),
            PIN.replace(' ', "")
        );
        // The fingerprint is public, and shown so the operator can compare it.
        assert!(format!("{:?}", c.nas[0]).contains("AB:CD:EF"));

        let c = parse(&format!("{NAS}api_tls = true\napi_port = 18729")).unwrap();
        assert_eq!(c.nas[0].api_port, 18729);
    }

    #[test]
    fn bad_api_tls_settings_name_the_key() {
        let err = parse(&format!("{NAS}api_tls_fingerprint = \"12:34\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nas[0].api_tls_fingerprint"), "{err}");
        assert!(err.contains("64 hex digits"), "{err}");

        let err = parse(&format!(
            "{NAS}api_tls = false\napi_tls_fingerprint = \"{PIN}\""
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("nas[0].api_tls_fingerprint"), "{err}");
        assert!(err.contains("api_tls = true"), "{err}");

        let err = parse(&format!("{NAS}api_tls = \"yes\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("api_tls"), "{err}");
    }
}
