//! A device's credentials form (write-only password) and its host-key page (old and new
//! fingerprint, the reset).

use super::*;

/// The credentials form's fields. The password is write-only: never rendered back, and
/// its `Debug` does not print it.
#[derive(Deserialize)]
pub(super) struct CredentialsForm {
    csrf: String,
    #[serde(default)]
    username: String,
    password: String,
}

impl std::fmt::Debug for CredentialsForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialsForm")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

pub(super) fn credentials_page(
    c: &Caller,
    row: &DeviceRow,
    username: &str,
    error: Option<&ApiError>,
) -> Markup {
    let d = &row.device;
    html! {
        div.page-head {
            div {
                a.muted href=(format!("/devices/{}", d.id)) { "← " (d.name) }
                h1 { "Credentials of " (d.name) }
            }
        }
        form.card.narrow.login id="credentials" method="post" action=(format!("/devices/{}/credentials", d.id)) {
            @if let Some(err) = error {
                div.banner.danger id="credentials-error" data-field=[err.field.as_deref()] {
                    @if let Some(f) = &err.field { (f) ": " } (err.message)
                }
            }
            @if row.state() == DeviceState::BlockedAuth {
                div.banner.info { "The device refused the last login. New credentials lift the block; the next backup is due at once." }
            }
            p.muted { "The password is stored encrypted (CREDENTIAL_ENCRYPTION_KEY) and never shown again, here or anywhere else. Both fields are required; the username is the login the device knows." }
            input type="hidden" name="csrf" value=(c.csrf);
            label for="username" { "Username" }
            input id="username" name="username" type="text" autocomplete="off" required value=(username);
            label for="password" { "New password" }
            input id="password" name="password" type="password" autocomplete="new-password" required;
            button.primary type="submit" id="save-credentials" { "Save credentials" }
        }
    }
}

pub(super) async fn credentials_form(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    Path(id): Path<String>,
) -> PageResult {
    require_admin(&c)?;
    let row = visible_device(&s, &c, &id).await?;
    let body = credentials_page(&c, &row, &row.device.username, None);
    Ok(frame(
        &s,
        &c,
        &format!("Credentials · {}", row.device.name),
        Nav::Devices,
        body,
    )
    .into_response())
}

pub(super) async fn save_credentials(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    Path(id): Path<String>,
    Form(f): Form<CredentialsForm>,
) -> PageResult {
    let row = admin_device_post(&s, &c, &f.csrf, &id).await?;
    // The form sets the user and a new password; a key stays as it is (the API sets
    // keys). An empty password is refused here: for the API it removes the password.
    let result = if f.password.is_empty() {
        Err(ApiError::invalid(
            "password",
            "empty: type the new password",
        ))
    } else {
        let body = ops::Credentials {
            username: Some(f.username.trim().to_string()),
            password: Some(f.password),
            ssh_key: None,
            ssh_key_passphrase: None,
            remove_ssh_key: false,
        };
        ops::set_credentials(&s, &c, row.device.id, body).await
    };
    match result {
        Ok(_) => Ok(device_banner(
            row.device.id,
            "done",
            &format!(
                "{}: credentials saved; any login block is lifted",
                row.device.name
            ),
        )),
        // A refused value: the form again (200, like any page) with the reason; the
        // password field is empty again.
        Err(err)
            if err.status == StatusCode::UNPROCESSABLE_ENTITY
                || err.status == StatusCode::BAD_REQUEST =>
        {
            let page = credentials_page(&c, &row, f.username.trim(), Some(&err));
            Ok((
                StatusCode::OK,
                frame(
                    &s,
                    &c,
                    &format!("Credentials · {}", row.device.name),
                    Nav::Devices,
                    page,
                ),
            )
                .into_response())
        }
        Err(err) => Err(e(err)),
    }
}

pub(super) async fn host_key_page(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    Path(id): Path<String>,
) -> PageResult {
    require_admin(&c)?;
    let row = visible_device(&s, &c, &id).await?;
    let d = &row.device;
    let blocked = row.state() == DeviceState::BlockedHostKey;
    let presented = d
        .last_error_message
        .as_deref()
        .filter(|_| d.last_error_kind.as_deref() == Some("host_key_mismatch"))
        .and_then(rosbackup_core::device::presented_fingerprint);
    let body = html! {
        div.page-head {
            div {
                a.muted href=(format!("/devices/{}", d.id)) { "← " (d.name) }
                h1 { "Host key of " (d.name) }
            }
        }
        section.card {
            @if blocked {
                div.banner.danger { "The device presented a different host key than the one pinned at its first backup. That is expected after a router was replaced, reset or its SSH key regenerated — and it is what a man in the middle looks like. It is not contacted until you decide." }
            }
            dl.kv {
                dt { "Pinned (old)" } dd.mono id="old-fingerprint" { (d.ssh_host_key_fingerprint.as_deref().unwrap_or("none (the next backup pins what it sees)")) }
                @if blocked {
                    dt { "Presented (new)" } dd.mono id="new-fingerprint" { (presented.unwrap_or("not recorded")) }
                }
            }
            p.muted {
                "Verify the new key out of band — e.g. the fingerprint your SSH client shows when you log in to the router over a path you trust — then reset: the pinned key is forgotten, the block lifted, and the next backup (due at once) pins the key the device presents then."
            }
            form.inline method="post" action=(format!("/devices/{}/action/reset-host-key", d.id))
                data-confirm="Forget the pinned host key? The next backup trusts whatever key the device presents." {
                input type="hidden" name="csrf" value=(c.csrf);
                button.primary type="submit" id="action-reset-host-key" { "Reset host key" }
            }
        }
    };
    Ok(frame(
        &s,
        &c,
        &format!("Host key · {}", d.name),
        Nav::Devices,
        body,
    )
    .into_response())
}
