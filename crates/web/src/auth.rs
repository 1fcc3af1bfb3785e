//! Who is calling: bearer tokens for scripts, session cookies for browsers, CSRF checks.
//!
//! A request carries either `Authorization: Bearer <token>` or the session cookie. A
//! bearer token that does not verify is a 401 — it never falls back to a cookie — so a
//! script with a revoked token fails loudly. Browsers must echo their session's CSRF
//! token on every state-changing request (a form field for forms, `X-CSRF-Token` for
//! `fetch`); bearer calls need none, since browsers never attach bearer tokens on their
//! own. The session cookie is HttpOnly and SameSite=Strict.
//!
//! Imports `error`, `layout` and `state` only; `ops` and the faces depend on it.

use crate::error::{ApiError, error_page};
use crate::layout::Chrome;
use crate::state::{AuthMode, WebState};
use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Redirect, Response};
use rosbackup_core::access::{Principal, digest_eq};

pub const SESSION_COOKIE: &str = "rb_session";
pub const LOGIN_COOKIE: &str = "rb_login";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How the caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Bearer,
    Session,
    /// `--insecure-no-auth`.
    Open,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// The CSRF token pages must embed (empty for bearer callers).
    pub csrf: String,
    pub via: Via,
}

impl Caller {
    /// Whether `presented` is this caller's CSRF token (bearer callers need none).
    pub fn csrf_ok(&self, presented: Option<&str>) -> bool {
        match self.via {
            Via::Bearer => true,
            Via::Session | Via::Open => {
                presented.is_some_and(|p| digest_eq(p.as_bytes(), self.csrf.as_bytes()))
            }
        }
    }

    pub fn tenant(&self) -> Option<uuid::Uuid> {
        self.principal.tenant_id
    }

    /// What the page chrome shows about this caller.
    pub fn chrome<'a>(&'a self, state: &WebState) -> Chrome<'a> {
        Chrome {
            principal: &self.principal,
            csrf: &self.csrf,
            session: self.via == Via::Session,
            auth_disabled: state.settings().auth == AuthMode::Disabled,
        }
    }
}

/// A cookie's value from the request headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value with our flags.
pub fn set_cookie(name: &str, value: &str, max_age: i64, secure: bool) -> String {
    format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    )
}

fn bearer(headers: &HeaderMap) -> Option<Option<&str>> {
    let v = headers.get(header::AUTHORIZATION)?;
    let v = v.to_str().ok();
    Some(v.and_then(|v| {
        let (scheme, token) = v.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then_some(token.trim())
    }))
}

/// Identify the caller, if any. Store errors surface as `Err`.
async fn identify(state: &WebState, parts: &Parts) -> Result<Option<Caller>, ApiError> {
    if let Some(presented) = bearer(&parts.headers) {
        let Some(token) = presented else {
            return Ok(None);
        };
        let principal = state.access().authenticate(token).await?;
        return Ok(principal.map(|principal| Caller {
            principal,
            csrf: String::new(),
            via: Via::Bearer,
        }));
    }
    if let Some(value) = cookie(&parts.headers, SESSION_COOKIE)
        && let Some(session) = state.access().session(value).await?
    {
        return Ok(Some(Caller {
            principal: session.principal,
            csrf: session.csrf,
            via: Via::Session,
        }));
    }
    if state.settings().auth == AuthMode::Disabled {
        return Ok(Some(Caller {
            principal: Principal::unauthenticated_admin(),
            csrf: state.open_csrf().to_string(),
            via: Via::Open,
        }));
    }
    Ok(None)
}

fn safe_method(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// An API caller: 401 (JSON) without valid credentials, 403 when a browser's
/// state-changing call lacks its CSRF header.
#[derive(Debug, Clone)]
pub struct ApiCaller(pub Caller);

impl FromRequestParts<WebState> for ApiCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, ApiError> {
        let caller = identify(state, parts)
            .await?
            .ok_or_else(ApiError::unauthenticated)?;
        if !safe_method(&parts.method) {
            let presented = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
            if !caller.csrf_ok(presented) {
                return Err(ApiError::csrf());
            }
        }
        Ok(ApiCaller(caller))
    }
}

/// A page caller: without a session, browsers are sent to the login page.
#[derive(Debug, Clone)]
pub struct PageCaller(pub Caller);

/// Where an unauthenticated page request goes.
pub struct ToLogin(String);

impl IntoResponse for ToLogin {
    fn into_response(self) -> Response {
        Redirect::to(&self.0).into_response()
    }
}

impl FromRequestParts<WebState> for PageCaller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, Response> {
        match identify(state, parts).await {
            Ok(Some(c)) => Ok(PageCaller(c)),
            Ok(None) => {
                let next = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                let target = format!("/login?next={}", url_encode(next));
                Err(ToLogin(target).into_response())
            }
            Err(e) => Err(error_page(e.status, &e.message)),
        }
    }
}

impl OptionalFromRequestParts<WebState> for PageCaller {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &WebState,
    ) -> Result<Option<Self>, Response> {
        match identify(state, parts).await {
            Ok(c) => Ok(c.map(PageCaller)),
            Err(e) => Err(error_page(e.status, &e.message)),
        }
    }
}

/// Percent-encode for a query value.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A post-login redirect target: a local path only (no `//host`, no scheme).
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; rb_session_x=2; rb_session=abc"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "a"), Some("1"));
        assert_eq!(cookie(&h, "b"), None);
    }

    #[test]
    fn only_local_redirects_after_login() {
        assert_eq!(
            safe_next(Some("/devices?status=failing")),
            "/devices?status=failing"
        );
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_malformed_is_flagged() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        assert_eq!(bearer(&h), Some(Some("abc")));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), Some(None));
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
