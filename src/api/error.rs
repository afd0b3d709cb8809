//! API errors in the contract's shape: `{"success": false, "message": "…"}` with the status
//! and message the contract names. Internal details never reach the client; they are logged.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::sessions::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 with a precise message about the parameter.
    #[error("{0}")]
    BadRequest(String),
    /// 401: missing, expired or invalid token.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403 "<permission> denied".
    #[error("{0} denied")]
    Denied(&'static str),
    /// 403 "not authorized": outside the caller's scope.
    #[error("not authorized")]
    OutOfScope,
    #[error("session not found")]
    SessionNotFound,
    #[error("{0}")]
    NotFound(&'static str),
    #[error("too many rows, narrow date range")]
    TooManyRows,
    #[error("rate limit exceeded")]
    RateLimited { retry_after_secs: u64 },
    /// 429: every export slot is streaming.
    #[error("too many concurrent exports, try again later")]
    TooManyExports,
    #[error("{0}")]
    Unavailable(&'static str),
    /// 500: the detail is logged, the client sees a generic message.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn bad(message: impl Into<String>) -> Self {
        ApiError::BadRequest(message.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Denied(_) | ApiError::OutOfScope => StatusCode::FORBIDDEN,
            ApiError::SessionNotFound | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::TooManyRows => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited { .. } | ApiError::TooManyExports => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_transient() {
            tracing::warn!(error = %e, "API request failed: store unavailable");
            ApiError::Unavailable("database unavailable")
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

/// The contract's error body.
pub fn body(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "success": false, "message": message })),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(detail) = &self {
            tracing::error!(error = %detail, "API request failed");
        }
        let mut response = body(status, &self.to_string());
        match self {
            ApiError::RateLimited { retry_after_secs } => {
                if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                    response.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            ApiError::TooManyExports => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
            }
            ApiError::Unauthorized(_) => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}
