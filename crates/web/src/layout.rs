//! The dashboard's page chrome (head, top bar, navigation, the open-auth banner) and the
//! small formatting helpers every page uses ("5 min ago", "in 2 h").
//!
//! Shared by `pages` and `history` (and `error`, for the icon). It imports no other web
//! module: what it needs to know about the caller comes in as a [`Chrome`].

use axum::response::Html;
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};
use rosbackup_core::access::Principal;

/// The tab icon, inline (no extra request, allowed by the CSP's `img-src data:`).
pub const FAVICON: &str = "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E%3Cpath d='M8 1l7 7-7 7-7-7z' fill='%230b7285'/%3E%3C/svg%3E";

/// The top-bar entry a page belongs under.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Devices,
    Jobs,
    JumpHosts,
}

/// What the chrome shows about the caller and the server.
pub struct Chrome<'a> {
    pub principal: &'a Principal,
    /// The CSRF token the page embeds (for `fetch` and the logout form).
    pub csrf: &'a str,
    /// Signed in with a session cookie (shows "Log out").
    pub session: bool,
    /// `--insecure-no-auth` (shows the danger banner).
    pub auth_disabled: bool,
}

/// A page in the dashboard's frame.
pub fn page(chrome: &Chrome, title: &str, nav: Nav, body: Markup) -> Html<String> {
    let p = chrome.principal;
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    meta name="csrf-token" content=(chrome.csrf);
                    title { (title) " · rosbackup" }
                    link rel="icon" href=(FAVICON);
                    link rel="stylesheet" href="/assets/app.css";
                    script src="/assets/app.js" defer {}
                }
                body {
                    header.top {
                        a.brand href="/" { span.logo { "◆" } " rosbackup" }
                        nav {
                            a href="/" class=[(nav == Nav::Overview).then_some("active")] { "Overview" }
                            a href="/devices" class=[(nav == Nav::Devices).then_some("active")] { "Devices" }
                            a href="/jobs" class=[(nav == Nav::Jobs).then_some("active")] { "Jobs" }
                            @if p.is_admin() {
                                a href="/jump-hosts" id="nav-jump-hosts" class=[(nav == Nav::JumpHosts).then_some("active")] { "Jump hosts" }
                            }
                        }
                        div.who {
                            span.name { (p.name) }
                            span class=(format!("role {}", p.role.as_str())) { (p.role.as_str()) }
                            @if let Some(t) = p.tenant_id {
                                span.tenant title=(t) { "tenant " (t.to_string().get(..8).unwrap_or("")) }
                            }
                            @if chrome.session {
                                form method="post" action="/logout" {
                                    input type="hidden" name="csrf" value=(chrome.csrf);
                                    button.link type="submit" id="logout" { "Log out" }
                                }
                            }
                        }
                    }
                    @if chrome.auth_disabled {
                        div.banner.danger { "Authentication is disabled (--insecure-no-auth): anyone who reaches this port is an admin." }
                    }
                    main { (body) }
                }
            }
        }
        .into_string(),
    )
}

// ---- formatting --------------------------------------------------------------------

/// "12 s ago", "5 min ago", "3 h ago", "2 d ago".
pub fn ago(t: DateTime<Utc>) -> String {
    let s = (Utc::now() - t).num_seconds();
    if s < 0 {
        return until(t);
    }
    format!("{} ago", span(s))
}

/// "in 5 min", or "overdue 2 min".
pub fn until(t: DateTime<Utc>) -> String {
    let s = (t - Utc::now()).num_seconds();
    if s < 0 {
        format!("overdue {}", span(-s))
    } else if s == 0 {
        "now".into()
    } else {
        format!("in {}", span(s))
    }
}

/// A number of seconds the way people say it: "5 s", "2 min", "2 h", "3 d".
pub fn span(s: i64) -> String {
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_speak() {
        assert_eq!(span(5), "5 s");
        assert_eq!(span(125), "2 min");
        assert_eq!(span(7200), "2 h");
        assert_eq!(span(3 * 86400), "3 d");
    }
}
