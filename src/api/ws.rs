//! `GET /api/sessions/ws` (being written).
use super::error::ApiError;
use axum::response::Response;
pub async fn live() -> Result<Response, ApiError> {
    Err(ApiError::Unavailable("not implemented yet"))
}
