//! `GET /api/sessions/export` (being written).
use super::error::ApiError;
use axum::response::Response;
pub async fn export() -> Result<Response, ApiError> {
    Err(ApiError::Unavailable("not implemented yet"))
}
