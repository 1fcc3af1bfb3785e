//! The dashboard and the JSON API, served by the enqueuer.
//!
//! One router, two faces over the same queries: server-rendered HTML pages (`pages`)
//! for people, and `/api/v1` (`api`) for scripts, both behind `auth`. The pages use a
//! few lines of JavaScript only to refresh fragments and to show a manual backup's
//! outcome; every action also works as a plain form post. Nothing here ever reads a
//! device's config text: pages and API show hashes and sizes, never content.
//!
//! Every route needs a caller ([`auth::Caller`]); its tenant scope is applied to every
//! query it makes, so a tenant-scoped token cannot reach another tenant's rows by
//! guessing ids (it gets the same 404 as for a device that does not exist).
//!
//! The modules form a one-way graph; a module imports only modules listed below it:
//!
//! ```text
//! lib (router)     ── wires the faces together
//! api, pages       ── the faces: JSON (+ OpenAPI) and HTML
//! history          ── config history, JSON and HTML (embedded by api and pages)
//! ops              ── the operations both faces call, and the types they take and return
//! auth, extract    ── who is calling (callers, CSRF); request extractors with our errors
//! error            ── the error type, its stable codes, its JSON and HTML rendering
//! layout, charts   ── page chrome and formatting; SVG charts
//! state            ── WebState and the settings
//! ```

pub mod api;
pub mod auth;
pub mod binaries;
mod charts;
pub mod error;
pub mod extract;
pub mod history;
pub mod layout;
pub mod ops;
pub mod pages;
pub mod state;

pub use state::{AuthMode, WebSettings, WebState};

use axum::Router;

/// Request bodies above this are refused (413) before they are read.
pub const MAX_BODY: usize = 64 * 1024;

/// The dashboard and `/api/v1`, all behind auth.
pub fn router(state: WebState) -> Router {
    Router::new()
        .merge(pages::routes())
        .merge(history::page_routes())
        .merge(binaries::page_routes())
        .nest("/api/v1", api::routes())
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// Headers every response carries: no framing, no sniffing, no referrer leaks, and a
/// CSP that allows only our own scripts and styles.
async fn security_headers(mut res: axum::response::Response) -> axum::response::Response {
    use axum::http::HeaderValue;
    let h = res.headers_mut();
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    if !h.contains_key(axum::http::header::CACHE_CONTROL) {
        h.insert(
            axum::http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
    }
    res
}
