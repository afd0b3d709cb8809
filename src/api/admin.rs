//! Admin endpoints for subscribers and resellers (being written).
use super::error::ApiError;
use axum::response::Response;
pub async fn list_subscribers() -> Result<Response, ApiError> {
    Err(ApiError::Unavailable("not implemented yet"))
}
pub async fn import_subscribers() -> Result<Response, ApiError> {
    Err(ApiError::Unavailable("not implemented yet"))
}
pub async fn put_subscriber() -> Result<Response, ApiError> {
    Err(ApiError::Unavailable("not implemented yet"))
}
pub async fn get_subscriber() -> Result<Response, ApiError> {
    Err(ApiError::Unavailable("not implemented yet"))
}
pub async fn list_resellers() -> Result<Response, ApiError> {
    Err(ApiError::Unavailable("not implemented yet"))
}
pub async fn import_resellers() -> Result<Response, ApiError> {
    Err(ApiError::Unavailable("not implemented yet"))
}
pub async fn put_reseller() -> Result<Response, ApiError> {
    Err(ApiError::Unavailable("not implemented yet"))
}
