//! Jump hosts: a device's own (form, write-only secrets), the bastion key page with its
//! reset, and the jump hosts page for tenants' defaults and credential profiles'.

use super::*;

/// The jump host form's fields. The secrets are write-only: never rendered back, and its
/// `Debug` does not print them.
#[derive(Deserialize)]
pub(super) struct JumpForm {
    csrf: String,
    #[serde(default)]
    jump_host: String,
    #[serde(default)]
    jump_password: String,
    #[serde(default)]
    jump_key: String,
    #[serde(default)]
    jump_key_passphrase: String,
}

impl std::fmt::Debug for JumpForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JumpForm")
            .field("jump_host", &self.jump_host)
            .finish_non_exhaustive()
    }
}

impl JumpForm {
    /// The operation's body: empty fields are absent.
    fn into_body(self) -> ops::SetJumpHost {
        let some = |v: String| Some(v).filter(|v| !v.trim().is_empty());
        ops::SetJumpHost {
            jump_host: some(self.jump_host),
            jump_password: some(self.jump_password),
            jump_key: some(self.jump_key),
            jump_key_passphrase: some(self.jump_key_passphrase),
        }
    }
}

/// The jump host fields (write-only secrets), for a device, a profile or a tenant.
pub(super) fn jump_fields(id: &str, current: &str, direct: bool) -> Markup {
    html! {
        label for=(format!("{id}-host")) { "Jump host" }
        input type="text" name="jump_host" id=(format!("{id}-host")) autocomplete="off"
            placeholder=(if direct { "none of its own" } else { "none" }) value=(current);
        label for=(format!("{id}-password")) { "Bastion password (optional)" }
        input type="password" name="jump_password" id=(format!("{id}-password")) autocomplete="new-password";
        label for=(format!("{id}-key")) { "Bastion private key (optional)" }
        textarea name="jump_key" id=(format!("{id}-key")) rows="3" autocomplete="off" spellcheck="false" {}
        label for=(format!("{id}-key-passphrase")) { "Key passphrase (if protected)" }
        input type="password" name="jump_key_passphrase" id=(format!("{id}-key-passphrase")) autocomplete="off";
    }
}

/// A jump host as shown on the jump hosts page: `[user@]host:port`, the secrets it has
/// (by name only) and the bastion's pin.
pub(super) fn jump_summary(j: Option<&ops::JumpHostView>) -> Markup {
    html! {
        @if let Some(j) = j {
            span.mono { (j.display) }
            @if j.has_password || j.has_key {
                " " span.muted { "(" @if j.has_password { "password" } @if j.has_password && j.has_key { ", " } @if j.has_key { "key" } " stored)" }
            }
            br;
            span.mono.small.muted { "key " (j.pinned_fingerprint.as_deref().unwrap_or("not pinned yet")) }
        } @else {
            span.muted { "none" }
        }
    }
}

#[derive(Deserialize)]
pub(super) struct JumpHostsParams {
    done: Option<String>,
    error: Option<String>,
}

/// Jump hosts beyond a device's own (admins): the tenants' defaults, the credential
/// profiles', and the bastions' pinned keys with a reset — what `rosbackup tenants
/// set-jump-host`, `credentials set --jump-host` and `bastions` do, through `ops`.
pub(super) async fn jump_hosts(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    PageQuery(q): PageQuery<JumpHostsParams>,
) -> PageResult {
    require_admin(&c)?;
    let mut tenants = ops::tenants(&s, &c).await.map_err(e)?;
    // A scoped admin's tenant, even before it has a device.
    if let Some(t) = c.tenant()
        && !tenants.iter().any(|x| x.tenant_id == t)
    {
        tenants.push(rosbackup_core::report::TenantCount {
            tenant_id: t,
            name: None,
            devices: 0,
        });
    }
    let mut defaults = Vec::new();
    for t in &tenants {
        defaults.push(ops::tenant_jump(&s, &c, t.tenant_id).await.map_err(e)?);
    }
    let profiles = ops::list_profiles(&s, &c).await.map_err(e)?;
    let pins = ops::bastions(&s, &c).await.map_err(e)?;
    let body = html! {
        div.page-head { div { h1 { "Jump hosts" } } }
        @if let Some(done) = &q.done { div.banner.good id="flash" { (done) } }
        @if let Some(err) = &q.error { div.banner.danger id="form-error" { (err) } }
        p.muted {
            "A device goes through its own jump host (set on its page), else its credential profile's, else its tenant's default. "
            "Passwords and keys for bastions are stored encrypted and never shown again; without them the device's user and key log in there. "
            "Changing a jump host unblocks the devices that no longer go through a bastion whose changed key blocked them."
        }
        section.card id="tenant-jump-hosts" {
            h2 { "Tenant defaults" }
            @for (t, d) in tenants.iter().zip(&defaults) {
                div.jump-owner data-tenant=(t.tenant_id) {
                    h3 { (t.label()) " " span.mono.small.muted { (t.tenant_id) } }
                    p { (jump_summary(d.jump_host.as_ref())) }
                    form.jump method="post" action=(format!("/jump-hosts/tenant/{}", t.tenant_id)) {
                        input type="hidden" name="csrf" value=(c.csrf);
                        (jump_fields(&format!("tenant-{}", t.tenant_id), d.jump_host.as_ref().map_or("", |j| j.display.as_str()), false))
                        button type="submit" id=(format!("save-tenant-{}", t.tenant_id)) { "Save tenant default" }
                    }
                }
            }
        }
        section.card id="profile-jump-hosts" {
            h2 { "Credential profiles" }
            @if profiles.is_empty() { p.muted { "No credential profiles (" code { "rosbackup credentials add" } ")." } }
            @for p in &profiles {
                div.jump-owner data-profile=(p.id) {
                    h3 { (p.name) " " span.muted.small { (p.devices) " device(s)" } }
                    p { (jump_summary(p.jump_host.as_ref())) }
                    form.jump method="post" action=(format!("/jump-hosts/profile/{}", p.id)) {
                        input type="hidden" name="csrf" value=(c.csrf);
                        (jump_fields(&format!("profile-{}", p.id), p.jump_host.as_ref().map_or("", |j| j.display.as_str()), false))
                        button type="submit" id=(format!("save-profile-{}", p.id)) { "Save profile's jump host" }
                    }
                }
            }
        }
        section.card id="bastion-pins" {
            h2 { "Pinned bastion keys" }
            @if pins.is_empty() { p.muted { "None yet: a bastion's key is pinned the first time a backup goes through it." } }
            @else {
                table {
                    thead { tr { th { "Bastion" } th { "Tenant" } th { "Pinned (old)" } th { "Presented instead (new)" } th {} } }
                    tbody {
                        @for b in &pins {
                            @let shown = rosbackup_core::jump::display(None, &b.host, u16::try_from(b.port).unwrap_or(22));
                            tr data-bastion=(shown) {
                                td.mono { (shown) }
                                td.mono.small { (b.tenant_id) }
                                td.mono.small { (b.fingerprint) }
                                td.mono.small { (b.presented_fingerprint.as_deref().unwrap_or("—")) }
                                td {
                                    form.inline method="post" action="/jump-hosts/reset"
                                        data-confirm="Forget the bastion's pinned key? The next backup through it trusts whatever key it presents." {
                                        input type="hidden" name="csrf" value=(c.csrf);
                                        input type="hidden" name="bastion" value=(shown);
                                        input type="hidden" name="tenant_id" value=(b.tenant_id);
                                        button type="submit" { "Reset" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(frame(&s, &c, "Jump hosts", Nav::JumpHosts, body).into_response())
}

/// Back to the jump hosts page with a banner.
pub(super) fn to_jump_hosts(key: &str, text: &str) -> Response {
    Redirect::to(&format!("/jump-hosts?{key}={}", url_encode(text))).into_response()
}

/// A refused value (422) as a banner, other errors as an error page.
pub(super) fn jump_outcome<T>(
    r: Result<T, ApiError>,
    done: impl FnOnce(T) -> String,
) -> PageResult {
    match r {
        Ok(v) => Ok(to_jump_hosts("done", &done(v))),
        Err(err) if err.status == StatusCode::UNPROCESSABLE_ENTITY => Ok(to_jump_hosts(
            "error",
            &format!(
                "Jump host: {}{}",
                err.field.map(|f| format!("{f}: ")).unwrap_or_default(),
                err.message
            ),
        )),
        Err(err) => Err(e(err)),
    }
}

pub(super) fn shown_or_none(j: Option<&ops::JumpHostView>) -> String {
    j.map_or_else(|| "none".into(), |j| j.display.clone())
}

pub(super) async fn save_tenant_jump(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    Path(id): Path<String>,
    Form(f): Form<JumpForm>,
) -> PageResult {
    admin_post(&c, &f.csrf)?;
    let id =
        Uuid::try_parse(&id).map_err(|_| error_page(StatusCode::NOT_FOUND, "No such tenant."))?;
    let r = ops::set_tenant_jump(&s, &c, id, f.into_body()).await;
    jump_outcome(r, |t| {
        format!(
            "tenant {}: default jump host {}",
            t.tenant_id,
            shown_or_none(t.jump_host.as_ref())
        )
    })
}

pub(super) async fn save_profile_jump(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    Path(id): Path<String>,
    Form(f): Form<JumpForm>,
) -> PageResult {
    admin_post(&c, &f.csrf)?;
    let id = Uuid::try_parse(&id)
        .map_err(|_| error_page(StatusCode::NOT_FOUND, "No such credential profile."))?;
    let r = ops::set_profile_jump(&s, &c, id, f.into_body()).await;
    jump_outcome(r, |p| {
        format!(
            "credential profile {}: jump host {}",
            p.name,
            shown_or_none(p.jump_host.as_ref())
        )
    })
}

#[derive(Debug, Deserialize)]
pub(super) struct ResetPinForm {
    csrf: String,
    bastion: String,
    tenant_id: Option<Uuid>,
}

pub(super) async fn reset_bastion_pin(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    Form(f): Form<ResetPinForm>,
) -> PageResult {
    admin_post(&c, &f.csrf)?;
    let bastion = f.bastion.clone();
    let r = ops::reset_bastion(
        &s,
        &c,
        ops::ResetBastion {
            bastion: f.bastion,
            tenant_id: f.tenant_id,
        },
    )
    .await;
    jump_outcome(r, |r| {
        format!(
            "bastion {bastion}: {}; {} device(s) unblocked, due now",
            if r.forgotten {
                "pinned key forgotten"
            } else {
                "no key was pinned"
            },
            r.unblocked
        )
    })
}

/// Set, clear (empty) or make `direct` a device's own jump host through the same
/// operation as the API; a refused value comes back in a banner (the secrets are not
/// sent back), nothing changed.
pub(super) async fn save_jump_host(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    Path(id): Path<String>,
    Form(f): Form<JumpForm>,
) -> PageResult {
    let row = admin_device_post(&s, &c, &f.csrf, &id).await?;
    let back = |key: &str, text: &str| device_banner(row.device.id, key, text);
    match ops::set_device_jump(&s, &c, row.device.id, f.into_body()).await {
        Ok(view) => {
            let shown = match &view.jump_host {
                Some(j) => format!(
                    "via bastion {} ({})",
                    j.display,
                    jump_source_words(j.source)
                ),
                None if view.jump_direct => "direct".into(),
                None => "none".into(),
            };
            Ok(back(
                "done",
                &format!("{}: jump host {shown}", row.device.name),
            ))
        }
        Err(err) if err.status == StatusCode::UNPROCESSABLE_ENTITY => Ok(back(
            "error",
            &format!(
                "Jump host: {}{}",
                err.field.map(|f| format!("{f}: ")).unwrap_or_default(),
                err.message
            ),
        )),
        Err(err) => Err(e(err)),
    }
}

/// The bastion in front of a device: its pinned key and, when it changed, the key it
/// presented instead, with a reset (like a device's host key page).
pub(super) async fn bastion_key_page(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    Path(id): Path<String>,
) -> PageResult {
    require_admin(&c)?;
    let row = visible_device(&s, &c, &id).await?;
    let d = &row.device;
    let Some(via) = ops::device_jump(&s, d.tenant_id, d.id).await.map_err(e)? else {
        return Err(error_page(
            StatusCode::NOT_FOUND,
            "This device is reached directly, through no bastion.",
        ));
    };
    let pinned = ops::bastions(&s, &c)
        .await
        .map_err(e)?
        .into_iter()
        .find(|b| {
            b.tenant_id == d.tenant_id && b.host == via.host && b.port == i32::from(via.port)
        });
    let presented = pinned
        .as_ref()
        .and_then(|b| b.presented_fingerprint.clone());
    let blocked = d.blocked_reason.as_deref() == Some("bastion_host_key_mismatch");
    let bastion = rosbackup_core::jump::display(None, &via.host, via.port);
    let body = html! {
        div.page-head {
            div {
                a.muted href=(format!("/devices/{}", d.id)) { "← " (d.name) }
                h1 { "Bastion key of " (bastion) }
            }
        }
        section.card {
            @if presented.is_some() {
                div.banner.danger { "The bastion presented a different host key than the one pinned when a backup first went through it. Every device of the tenant behind it is blocked until you decide: it is expected after the bastion was rebuilt or its SSH key regenerated — and it is what a man in the middle looks like." }
            }
            dl.kv {
                dt { "Bastion" } dd.mono { (bastion) " " span.muted { "(" (jump_source_words(via.source)) ")" } }
                dt { "Pinned (old)" } dd.mono id="old-bastion-fingerprint" {
                    (pinned.as_ref().map(|b| b.fingerprint.as_str()).unwrap_or("none (the next backup pins what it sees)"))
                }
                @if presented.is_some() || blocked {
                    dt { "Presented (new)" } dd.mono id="new-bastion-fingerprint" { (presented.as_deref().unwrap_or("not recorded")) }
                }
            }
            p.muted {
                "Verify the new key out of band — e.g. the fingerprint ssh shows when you log in to the bastion over a path you trust — then reset: the pin is forgotten, the devices behind the bastion are unblocked and due at once, and the next backup through it pins the key it presents then."
            }
            form.inline method="post" action=(format!("/devices/{}/bastion-key", d.id))
                data-confirm="Forget the bastion's pinned key? The next backup through it trusts whatever key it presents." {
                input type="hidden" name="csrf" value=(c.csrf);
                button.primary type="submit" id="reset-bastion-key" { "Reset bastion key" }
            }
        }
    };
    Ok(frame(
        &s,
        &c,
        &format!("Bastion key · {}", d.name),
        Nav::Devices,
        body,
    )
    .into_response())
}

/// Forget the pinned key of the bastion in front of a device (the API's reset).
pub(super) async fn reset_bastion_key(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> PageResult {
    let row = admin_device_post(&s, &c, &f.csrf, &id).await?;
    let d = &row.device;
    let Some(via) = ops::device_jump(&s, d.tenant_id, d.id).await.map_err(e)? else {
        return Err(error_page(
            StatusCode::NOT_FOUND,
            "This device is reached directly, through no bastion.",
        ));
    };
    let bastion = rosbackup_core::jump::display(None, &via.host, via.port);
    let r = ops::reset_bastion(
        &s,
        &c,
        ops::ResetBastion {
            bastion: bastion.clone(),
            tenant_id: Some(d.tenant_id),
        },
    )
    .await
    .map_err(e)?;
    Ok(device_banner(
        d.id,
        "done",
        &format!(
            "bastion {bastion}: {}; {} device(s) unblocked, due now",
            if r.forgotten {
                "pinned key forgotten"
            } else {
                "no key was pinned"
            },
            r.unblocked
        ),
    ))
}
