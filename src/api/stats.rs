//! `GET /api/sessions/stats` and `/:id/logs` (being written).
use super::error::ApiError;
use axum::response::Response;
pub async fn stats() -> Result<Response, ApiError> {
    Err(ApiError::Unavailable("not implemented yet"))
}
pub async fn logs() -> Result<Response, ApiError> {
    Err(ApiError::Unavailable("not implemented yet"))
}
