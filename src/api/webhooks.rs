//! `/webhooks/{provider}`: where Alipay, WeChat Pay and the sandbox post payment notifications.
//! The handler verifies first and answers exactly what the provider expects.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::routing::post;
use http::Response;
use std::sync::Arc;

use super::ApiState;
use super::extract::read_body;
use crate::error::GateError;

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new().route("/webhooks/{provider}", post(notify))
}

/// A payment notification. Replies: Alipay and the sandbox `success` as plain text; WeChat Pay
/// 204, or 4xx with `{"code":"FAIL","message":...}`.
#[utoipa::path(post, path = "/webhooks/{provider}", tag = "payments",
    params(("provider" = String, Path, description = "alipay | wechat | sandbox")),
    responses(
        (status = 200, description = "Accepted (`success`)", content_type = "text/plain"),
        (status = 400, description = "Refused: bad signature or malformed; nothing changed"),
        (status = 404, description = "No such provider on this gate")))]
pub async fn notify(
    State(state): State<Arc<ApiState>>,
    Path(provider): Path<String>,
    req: Request,
) -> Result<Response<Body>, GateError> {
    let (parts, body) = read_body(req).await?;
    Ok(state
        .payments
        .handle_notification(&provider, &parts.headers, &body)
        .await)
}
