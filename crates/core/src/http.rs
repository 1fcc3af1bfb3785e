//! The operational HTTP endpoints every process serves: `/healthz`, `/readyz`, `/metrics`.
//!
//! These three are the only routes without authentication (probes and Prometheus must
//! reach them); they reveal no device, host or config. `/healthz` is liveness: for a
//! worker it fails when the queue heartbeat stalls, so Kubernetes restarts a worker that
//! sits alive and idle. `/readyz` checks PostgreSQL and Redis.

use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::store::Store;
use crate::worker::Liveness;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::net::SocketAddr;

/// What the probes look at.
#[derive(Debug, Clone)]
pub struct OpsState {
    pub metrics: Metrics,
    pub store: Store,
    /// The job queue; `None` for processes that do not use Redis (the archiver).
    pub queue: Option<Queue>,
    /// Worker liveness; `None` for processes without an apalis worker.
    pub liveness: Option<(Liveness, i64)>,
}

pub fn ops_router(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz(State(s): State<OpsState>) -> impl IntoResponse {
    if let Some((live, limit)) = &s.liveness
        && let Some(age) = live.age()
        && age > *limit
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no queue heartbeat for {age} s\n"),
        );
    }
    (StatusCode::OK, "ok\n".to_string())
}

async fn readyz(State(s): State<OpsState>) -> impl IntoResponse {
    let redis = async {
        match &s.queue {
            Some(q) => Some(q.ping().await),
            None => None,
        }
    };
    let (db, redis) = tokio::join!(s.store.ping(), redis);
    let body = format!(
        "postgres: {}\nredis: {}\n",
        if db { "ok" } else { "unreachable" },
        match redis {
            Some(true) => "ok",
            Some(false) => "unreachable",
            None => "not used",
        }
    );
    let code = if db && redis != Some(false) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body)
}

async fn metrics(State(s): State<OpsState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

/// Bind `addr` (port 0 picks a free port) and serve `router` until `shutdown`.
/// Returns the bound address.
pub async fn serve(
    addr: &str,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await;
    });
    Ok((bound, handle))
}
