//! The metrics port: `/metrics` (Prometheus text), `/healthz` (the process serves) and
//! `/readyz` (the transport is connected, so streams can move records).

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::transport::Transport;

#[derive(Clone)]
struct HttpState {
    metrics: Metrics,
    transport: Arc<dyn Transport>,
}

/// Serves the metrics port on `listener` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    transport: Arc<dyn Transport>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(HttpState { metrics, transport });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn render_metrics(
    axum::extract::State(state): axum::extract::State<HttpState>,
) -> impl IntoResponse {
    let runtime = tokio::runtime::Handle::current().metrics();
    state.metrics.set_runtime_tasks(runtime.num_alive_tasks());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn ready(axum::extract::State(state): axum::extract::State<HttpState>) -> impl IntoResponse {
    if state.transport.is_connected() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "transport not connected\n")
    }
}
