//! Bearer-token authentication: JWTs shared with the panel.
//!
//! HS256 with `auth.jwt_secret` by default; RS256 or EdDSA with a public key
//! (`auth.jwt_public_key_file`) instead. Only the configured algorithm is accepted, so
//! `alg: none` and algorithm confusion (an HS256 token signed with the public key) fail.
//! `exp` is required; `aud` and `iss` are checked when configured.
//!
//! Claims: `sub`, `role` (admin | reseller | subscriber), `reseller_id` (resellers),
//! `username` (subscribers), `permissions` (`sessions.view`, `sessions.view_all`,
//! `subscribers.disconnect`), `exp`. An admin holds every permission; the other roles only
//! what `permissions` lists.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use crate::config::{Config, JwtAlgorithm};

pub const SESSIONS_VIEW: &str = "sessions.view";
/// Clock skew allowed on `exp` between the panel and this server.
pub const LEEWAY_SECS: u64 = 30;
pub const SESSIONS_VIEW_ALL: &str = "sessions.view_all";
pub const SUBSCRIBERS_DISCONNECT: &str = "subscribers.disconnect";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Reseller,
    Subscriber,
}

impl Role {
    /// Permissions `radacctd token` grants when none are given.
    pub fn default_permissions(self) -> &'static [&'static str] {
        match self {
            Role::Admin => &[SESSIONS_VIEW, SESSIONS_VIEW_ALL, SUBSCRIBERS_DISCONNECT],
            Role::Reseller => &[SESSIONS_VIEW, SUBSCRIBERS_DISCONNECT],
            Role::Subscriber => &[SESSIONS_VIEW],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reseller_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default)]
    pub permissions: Vec<String>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// One audience or several (RFC 7519 §4.1.3 allows both); checked by the verifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl From<&str> for Audience {
    fn from(s: &str) -> Self {
        Audience::One(s.to_owned())
    }
}

impl From<String> for Audience {
    fn from(s: String) -> Self {
        Audience::One(s)
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub claims: Claims,
}

impl Caller {
    pub fn has(&self, permission: &str) -> bool {
        self.claims.role == Role::Admin || self.claims.permissions.iter().any(|p| p == permission)
    }

    /// `Err(403 "<permission> denied")` unless the caller holds `permission`.
    pub fn require(&self, permission: &'static str) -> Result<(), ApiError> {
        if self.has(permission) {
            Ok(())
        } else {
            Err(ApiError::Denied(permission))
        }
    }

    /// Who did it, for the audit log.
    pub fn actor(&self) -> String {
        self.claims.sub.clone()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid public key in {path}: {message}")]
    Key { path: String, message: String },
}

/// Checks tokens. `None` in `AppState` when no key is configured: every API request then
/// gets 401, and start-up logs a warning.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn from_config(config: &Config) -> Result<Option<Verifier>, KeyError> {
        let (key, algorithm) = match config.auth.algorithm {
            JwtAlgorithm::Hs256 => match &config.jwt_secret {
                Some(secret) => (
                    DecodingKey::from_secret(secret.as_bytes()),
                    Algorithm::HS256,
                ),
                None => return Ok(None),
            },
            alg @ (JwtAlgorithm::Rs256 | JwtAlgorithm::EdDsa) => {
                let Some(path) = &config.auth.public_key_file else {
                    return Ok(None);
                };
                let shown = path.display().to_string();
                let pem = std::fs::read(path).map_err(|source| KeyError::Read {
                    path: shown.clone(),
                    source,
                })?;
                let parsed = if alg == JwtAlgorithm::Rs256 {
                    DecodingKey::from_rsa_pem(&pem).map(|k| (k, Algorithm::RS256))
                } else {
                    DecodingKey::from_ed_pem(&pem).map(|k| (k, Algorithm::EdDSA))
                };
                parsed.map_err(|e| KeyError::Key {
                    path: shown,
                    message: e.to_string(),
                })?
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp"]);
        match &config.auth.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".to_owned());
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &config.auth.issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        Ok(Some(Verifier { key, validation }))
    }

    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => ApiError::Unauthorized("token expired"),
                _ => ApiError::Unauthorized("invalid token"),
            },
        )?;
        let claims = data.claims;
        // A reseller without its tree, or a subscriber without its username, cannot be
        // scoped: refuse rather than guess.
        let consistent = match claims.role {
            Role::Admin => true,
            Role::Reseller => claims.reseller_id.is_some(),
            Role::Subscriber => claims.username.as_deref().is_some_and(|u| !u.is_empty()),
        };
        if !consistent {
            return Err(ApiError::Unauthorized("invalid token"));
        }
        Ok(claims)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or(ApiError::Unauthorized("missing token"))?;
        let verifier = state
            .verifier
            .as_ref()
            .ok_or(ApiError::Unauthorized("authentication is not configured"))?;
        Ok(Caller {
            claims: verifier.verify(token)?,
        })
    }
}

/// The token of an `Authorization: Bearer …` header (scheme case-insensitive).
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Sign an HS256 token (the `radacctd token` command and tests).
pub fn mint_hs256(secret: &str, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FileConfig, Overrides};

    fn verifier(extra: &str) -> Verifier {
        let file = FileConfig::parse(
            std::path::Path::new("t.toml"),
            &format!("[auth]\njwt_secret = \"k3y\"\n{extra}"),
        )
        .unwrap();
        let config = Config::build(file, Overrides::default()).unwrap();
        Verifier::from_config(&config).unwrap().unwrap()
    }

    fn claims(role: Role) -> Claims {
        Claims {
            sub: "panel".into(),
            role,
            reseller_id: Some(1),
            username: Some("bob".into()),
            permissions: vec![SESSIONS_VIEW.into()],
            exp: now_secs() + 600,
            iat: None,
            aud: None,
            iss: None,
        }
    }

    #[test]
    fn a_valid_token_verifies() {
        let t = mint_hs256("k3y", &claims(Role::Reseller)).unwrap();
        assert_eq!(verifier("").verify(&t).unwrap().reseller_id, Some(1));
    }

    #[test]
    fn wrong_key_expired_and_alg_none_are_rejected() {
        let v = verifier("");
        let wrong = mint_hs256("other", &claims(Role::Admin)).unwrap();
        assert!(matches!(
            v.verify(&wrong),
            Err(ApiError::Unauthorized("invalid token"))
        ));
        let mut old = claims(Role::Admin);
        old.exp = now_secs() - 3600;
        let expired = mint_hs256("k3y", &old).unwrap();
        assert!(matches!(
            v.verify(&expired),
            Err(ApiError::Unauthorized("token expired"))
        ));
        // {"alg":"none","typ":"JWT"} with the same payload and an empty signature.
        let good = mint_hs256("k3y", &claims(Role::Admin)).unwrap();
        let payload = good.split('.').nth(1).unwrap();
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert!(v.verify(&none).is_err());
        assert!(v.verify("garbage").is_err());
        assert!(v.verify("").is_err());
    }

    fn fixture(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/jwt")
            .join(name)
    }

    fn rs256_verifier() -> Verifier {
        let text = format!(
            "[auth]\njwt_algorithm = \"RS256\"\njwt_public_key_file = \"{}\"\n",
            fixture("rs256-public.pem").display()
        );
        let file = FileConfig::parse(std::path::Path::new("t.toml"), &text).unwrap();
        let config = Config::build(file, Overrides::default()).unwrap();
        Verifier::from_config(&config).unwrap().unwrap()
    }

    fn rs256_token(private_pem: &str, claims: &Claims) -> String {
        let pem = std::fs::read(fixture(private_pem)).unwrap();
        let key = EncodingKey::from_rsa_pem(&pem).unwrap();
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &key).unwrap()
    }

    /// The classic algorithm-confusion attack against an RS256 deployment: the public key
    /// is public, so an attacker signs an HS256 token using its PEM text (or DER bytes) as
    /// the HMAC secret, hoping the server feeds "its key" to whatever `alg` the header
    /// names. With a real key pair: the RS256 token signed by the private key passes,
    /// everything else — HS256 with the public key as secret, RS256 from another key,
    /// `alg: none` — is refused.
    #[test]
    fn rs256_hs256_confusion_with_a_real_key_pair_is_refused() {
        let v = rs256_verifier();
        let c = claims(Role::Admin);
        assert_eq!(
            v.verify(&rs256_token("rs256-private.pem", &c))
                .unwrap()
                .role,
            Role::Admin
        );

        let public_pem = std::fs::read_to_string(fixture("rs256-public.pem")).unwrap();
        let der_b64: String = public_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        for secret in [public_pem.as_str(), public_pem.trim_end(), der_b64.as_str()] {
            let forged = mint_hs256(secret, &c).unwrap();
            assert_eq!(
                jsonwebtoken::decode_header(&forged).unwrap().alg,
                Algorithm::HS256
            );
            assert!(
                matches!(
                    v.verify(&forged),
                    Err(ApiError::Unauthorized("invalid token"))
                ),
                "HS256 signed with the public key must be refused"
            );
        }

        let other = rs256_token("rs256-other-private.pem", &c);
        assert!(matches!(
            v.verify(&other),
            Err(ApiError::Unauthorized("invalid token"))
        ));

        let good = rs256_token("rs256-private.pem", &c);
        let payload = good.split('.').nth(1).unwrap();
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert!(v.verify(&none).is_err());
        // The valid signature moved onto a tampered payload (role escalation attempt).
        let mut sub = claims(Role::Subscriber);
        sub.username = Some("eve".into());
        let eve = rs256_token("rs256-private.pem", &sub);
        let sig = good.split('.').nth(2).unwrap();
        let header = eve.split('.').next().unwrap();
        let spliced = format!("{header}.{}.{sig}", eve.split('.').nth(1).unwrap());
        assert!(v.verify(&spliced).is_err());
    }

    #[test]
    fn audience_is_enforced_when_configured() {
        let v = verifier("audience = \"radacctd\"\n");
        let no_aud = mint_hs256("k3y", &claims(Role::Admin)).unwrap();
        assert!(v.verify(&no_aud).is_err());
        let mut c = claims(Role::Admin);
        c.aud = Some("radacctd".into());
        assert!(v.verify(&mint_hs256("k3y", &c).unwrap()).is_ok());
        c.aud = Some("other".into());
        assert!(v.verify(&mint_hs256("k3y", &c).unwrap()).is_err());
    }

    #[test]
    fn an_audience_list_is_accepted() {
        let v = verifier("audience = \"radacctd\"\n");
        let mut c = claims(Role::Admin);
        c.aud = Some(Audience::Many(vec!["panel".into(), "radacctd".into()]));
        assert!(v.verify(&mint_hs256("k3y", &c).unwrap()).is_ok());
        let v = verifier("");
        assert!(
            v.verify(&mint_hs256("k3y", &c).unwrap()).is_ok(),
            "no audience configured"
        );
    }

    #[test]
    fn inconsistent_role_claims_are_rejected() {
        let v = verifier("");
        let mut c = claims(Role::Reseller);
        c.reseller_id = None;
        assert!(v.verify(&mint_hs256("k3y", &c).unwrap()).is_err());
        let mut c = claims(Role::Subscriber);
        c.username = Some(String::new());
        assert!(v.verify(&mint_hs256("k3y", &c).unwrap()).is_err());
    }

    #[test]
    fn admin_holds_every_permission() {
        let admin = Caller {
            claims: Claims {
                permissions: vec![],
                ..claims(Role::Admin)
            },
        };
        assert!(admin.has(SUBSCRIBERS_DISCONNECT));
        let sub = Caller {
            claims: claims(Role::Subscriber),
        };
        assert!(sub.has(SESSIONS_VIEW));
        assert!(!sub.has(SUBSCRIBERS_DISCONNECT));
    }
}
