//! The login form, the session cookie and logout.

use super::*;

#[derive(Deserialize)]
pub(super) struct LoginQuery {
    next: Option<String>,
    error: Option<String>,
    signed_out: Option<String>,
}

pub(super) async fn login_form(
    State(s): State<WebState>,
    caller: Option<PageCaller>,
    PageQuery(q): PageQuery<LoginQuery>,
) -> Response {
    if caller.is_some() && q.error.is_none() {
        return Redirect::to(&safe_next(q.next.as_deref())).into_response();
    }
    let csrf = {
        use base64::Engine;
        use rand::RngCore;
        let mut b = [0u8; 18];
        rand::rngs::OsRng.fill_bytes(&mut b);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    };
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Sign in · rosbackup" }
                link rel="icon" href=(FAVICON);
                link rel="stylesheet" href="/assets/app.css";
            }
            body.center {
                form.card.narrow.login method="post" action="/login" {
                    div.brand.big { span.logo { "◆" } " rosbackup" }
                    p.muted { "Configuration backups for MikroTik RouterOS fleets." }
                    @if q.error.is_some() {
                        div.banner.danger id="login-error" { "That token is not valid, or it was revoked." }
                    } @else if q.signed_out.is_some() {
                        div.banner.good id="signed-out" { "You have been signed out." }
                    }
                    label for="token" { "API token" }
                    input id="token" name="token" type="password" autocomplete="off" required
                        placeholder="rbk_…" autofocus;
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="next" value=(safe_next(q.next.as_deref()));
                    button.primary type="submit" id="login" { "Sign in" }
                    p.muted.small { "No token yet? On the server: " code { "rosbackup tokens create --name you --role admin" } }
                }
            }
        }
    };
    let cookie = set_cookie(LOGIN_COOKIE, &csrf, 600, s.settings().secure_cookies);
    ([(header::SET_COOKIE, cookie)], Html(page.into_string())).into_response()
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    token: String,
    csrf: String,
    next: Option<String>,
}

pub(super) async fn login(
    State(s): State<WebState>,
    headers: axum::http::HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let expected = auth::cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    if expected.is_empty()
        || !rosbackup_core::access::digest_eq(expected.as_bytes(), f.csrf.as_bytes())
    {
        return error_page(
            StatusCode::FORBIDDEN,
            "The sign-in form expired. Go back, reload it and sign in again.",
        );
    }
    let next = safe_next(f.next.as_deref());
    let principal = match s.access().authenticate(&f.token).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            tracing::info!("dashboard login refused");
            return Redirect::to(&format!("/login?error=1&next={}", url_encode(&next)))
                .into_response();
        }
        Err(err) => return ApiError::from(err).page(),
    };
    let Some(token_id) = principal.token_id else {
        return Redirect::to("/").into_response();
    };
    let ttl = s.settings().session_ttl;
    let session = match s
        .access()
        .open_session(token_id, chrono::Duration::seconds(ttl.as_secs() as i64))
        .await
    {
        Ok(sess) => sess,
        Err(err) => return ApiError::from(err).page(),
    };
    tracing::info!(token = %principal.name, "dashboard login");
    let secure = s.settings().secure_cookies;
    let mut res = Redirect::to(&next).into_response();
    let h = res.headers_mut();
    for c in [
        set_cookie(
            SESSION_COOKIE,
            &session.cookie,
            ttl.as_secs() as i64,
            secure,
        ),
        set_cookie(LOGIN_COOKIE, "", 0, secure),
    ] {
        if let Ok(v) = c.parse() {
            h.append(header::SET_COOKIE, v);
        }
    }
    res
}

pub(super) async fn logout(
    State(s): State<WebState>,
    PageCaller(caller): PageCaller,
    headers: axum::http::HeaderMap,
    Form(f): Form<CsrfForm>,
) -> PageResult {
    check_csrf(&caller, &f.csrf)?;
    if let Some(c) = auth::cookie(&headers, SESSION_COOKIE) {
        s.access()
            .close_session(c)
            .await
            .map_err(|err| ApiError::from(err).page())?;
    }
    let mut res = Redirect::to("/login?signed_out=1").into_response();
    if let Ok(v) = set_cookie(SESSION_COOKIE, "", 0, s.settings().secure_cookies).parse() {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(res)
}
