//! What several commands share: reaching the device store, and printing for a person.
//!
//! Every store command opens the database the same way so that an operator who cannot
//! reach it reads one line that says why (refused, unknown database, authentication) and
//! never the URL's password, and every store error is told the same way (PostgreSQL's own
//! message, with a hint where there is one). The table and time formats live here so that
//! `devices` and `history` line up alike.

use crate::config::{ConfigError, Env};
use crate::secret::redact_url;
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// `DATABASE_URL`, checked (exit 2 when it is not a PostgreSQL URL).
pub(crate) fn database_url(env: &Env) -> Result<String, ConfigError> {
    env.url("DATABASE_URL", &["postgres", "postgresql"])
}

/// The URL as it may be shown: no password, neither in the user part nor as a
/// `password=` parameter.
pub(crate) fn shown_url(url: &str) -> String {
    let redacted = redact_url(url);
    match redacted.split_once('?') {
        None => redacted,
        Some((base, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_string(),
                })
                .collect();
            format!("{base}?{}", params.join("&"))
        }
    }
}

/// The password in a database URL, if any (to make sure no message repeats it).
fn url_password(url: &str) -> Vec<String> {
    let mut found = Vec::new();
    if let Some((_, rest)) = url.split_once("://") {
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && let Some((_, pw)) = userinfo.split_once(':')
            && !pw.is_empty()
        {
            found.push(pw.to_string());
        }
        if let Some((_, query)) = rest.split_once('?') {
            for p in query.split('&') {
                if let Some((k, v)) = p.split_once('=')
                    && k.eq_ignore_ascii_case("password")
                    && !v.is_empty()
                {
                    found.push(v.to_string());
                }
            }
        }
    }
    found
}

/// One line, without the URL's password.
fn one_line(msg: &str, url: &str) -> String {
    let mut msg = msg.replace(['\n', '\r'], " ");
    for pw in url_password(url) {
        msg = msg.replace(&pw, "***");
    }
    msg
}

/// Connect to the store. A probe connection first, so that the operator reads why the
/// database cannot be reached (refused, unknown database, authentication) rather than a
/// pool timeout; never the URL's password.
pub(crate) async fn open_store(env: &Env) -> anyhow::Result<Store> {
    use sqlx::Connection;
    let url = database_url(env)?;
    let fail = |why: String| {
        anyhow::anyhow!(
            "cannot connect to the database at {}: {}",
            shown_url(&url),
            one_line(&why, &url)
        )
    };
    let probe = tokio::time::timeout(
        Duration::from_secs(10),
        sqlx::postgres::PgConnection::connect(&url),
    )
    .await
    .map_err(|_| fail("no answer within 10 s".into()))?
    .map_err(|e| fail(describe(&StoreError::Db(e))))?;
    let _ = probe.close().await;
    Store::connect(&url, 2)
        .await
        .map_err(|e| fail(describe(&e)))
}

/// A store error in one line. PostgreSQL's own message, without sqlx's "at line N" (a
/// line of the server's source, easily mistaken for a line of the inventory); for a
/// unique violation with the key that collided.
pub(crate) fn describe(e: &StoreError) -> String {
    if let StoreError::Db(sqlx::Error::Database(d)) = e {
        let mut msg = format!("database: {}", d.message());
        if d.code().as_deref() == Some("23505")
            && let Some(detail) = d
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .and_then(|p| p.detail())
        {
            msg.push_str(&format!(" ({detail})"));
        }
        return msg;
    }
    e.to_string()
}

/// A store error for the operator, with a hint where there is one.
pub(crate) fn store_error(e: StoreError) -> anyhow::Error {
    let mut msg = describe(&e);
    if let StoreError::Db(sqlx::Error::Database(d)) = &e
        && d.code().as_deref() == Some("42P01")
    {
        msg.push_str(" (has `rosbackup migrate` been run on this database?)");
    }
    anyhow::anyhow!(msg)
}

/// A time in a table or a `show`: UTC to the second, `-` for none.
pub(crate) fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "-".into(),
        |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string(),
    )
}

/// Rows of text as aligned columns (the last column is not padded).
pub(crate) fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// The flags a key file and its passphrase variable came from, named in the errors: a
/// device's (`--key-file`, `--key-passphrase-env`) or a jump host's.
#[derive(Clone, Copy)]
pub(crate) struct KeyFlags {
    pub file: &'static str,
    pub passphrase_env: &'static str,
}

impl KeyFlags {
    pub(crate) const DEVICE: KeyFlags = KeyFlags {
        file: "--key-file",
        passphrase_env: "--key-passphrase-env",
    };
    pub(crate) const JUMP: KeyFlags = KeyFlags {
        file: "--jump-key-file",
        passphrase_env: "--jump-key-passphrase-env",
    };
}

/// A user key from `--key-file FILE` (OpenSSH or PEM), decrypted with the passphrase in
/// the environment variable named by `--key-passphrase-env` when it is protected. A key
/// that cannot be used is a configuration error (exit 2) naming the file, never quoting
/// it; the passphrase is read from the environment only, never from a flag.
pub(crate) fn read_key_file(
    path: &std::path::Path,
    passphrase_env: Option<&str>,
) -> anyhow::Result<crate::userkey::UserKey> {
    read_key_file_as(path, passphrase_env, KeyFlags::DEVICE)
}

/// [`read_key_file`] for the key of other flags (a jump host's): the errors name those
/// flags, so the hint for a protected key names the flag that takes its passphrase.
pub(crate) fn read_key_file_as(
    path: &std::path::Path,
    passphrase_env: Option<&str>,
    flags: KeyFlags,
) -> anyhow::Result<crate::userkey::UserKey> {
    let passphrase = match passphrase_env {
        None => None,
        Some(var) => Some(crate::Secret::new(std::env::var(var).map_err(|_| {
            ConfigError {
                var: var.to_string(),
                value: None,
                reason: format!(
                    "the key passphrase variable is not set (see {})",
                    flags.passphrase_env
                ),
            }
        })?)),
    };
    let bad = |reason: String| ConfigError {
        var: flags.file.into(),
        value: None,
        reason: format!("{}: {reason}", path.display()),
    };
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read it ({e})")))?;
    let text = String::from_utf8(bytes).map_err(|_| bad("not a text key file".into()))?;
    crate::userkey::UserKey::import(&text, passphrase.as_ref()).map_err(|e| {
        bad(match e {
            crate::userkey::KeyImportError::NeedsPassphrase => format!(
                "{e}; name the variable that holds its passphrase with {} VAR",
                flags.passphrase_env
            ),
            e => e.to_string(),
        })
        .into()
    })
}

/// An optional `--tenant` value (a name or an id) as the tenant's id; an unknown name is
/// the store's error, which says how to make one.
pub async fn optional_tenant(
    store: &crate::store::Store,
    tenant: Option<&str>,
) -> anyhow::Result<Option<uuid::Uuid>> {
    match tenant {
        None => Ok(None),
        Some(t) => Ok(Some(
            crate::tenant::resolve(store, t)
                .await
                .map_err(store_error)?,
        )),
    }
}
