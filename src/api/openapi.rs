//! `GET /api/openapi.json` (being written).
use super::error::ApiError;
use axum::response::Response;
pub async fn document() -> Result<Response, ApiError> {
    Err(ApiError::Unavailable("not implemented yet"))
}
