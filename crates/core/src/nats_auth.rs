//! NATS authentication beyond a password in the URL, and the one place NATS connect
//! options are built ([`options`]).
//!
//! Why: with only `nats://user:pass@…`, anyone who learns the password (it sits in every
//! process's URL) can publish on `config.backup.trigger` and make the fleet back up
//! routers. NATS' own answers are keys: an **nkey** user (`NATS_NKEY_FILE`, a file with
//! the user's seed, `SU…`) proves itself by signing the server's nonce, and in
//! operator/JWT mode a **credentials file** (`NATS_CREDS_FILE`, the user JWT and its seed,
//! as `nsc` writes it) adds a JWT the server checks against the account. Either lets the
//! server give each role its own permissions (README: only the backend publishes the
//! trigger subject, only the enqueuers subscribe to it).
//!
//! The file is read and checked once, at startup ([`NatsAuth::from_files`]): a missing,
//! unreadable or garbage file is a configuration error naming its variable (exit 2), not
//! a connection refused later. Neither the seed nor the JWT ever reaches an error message,
//! a log or a `Debug` output.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The variables, in one place for the config table and the errors.
pub const CREDS_VAR: &str = "NATS_CREDS_FILE";
pub const NKEY_VAR: &str = "NATS_NKEY_FILE";

/// How to authenticate to NATS beyond the URL. Default: nothing more.
#[derive(Clone, Default)]
pub struct NatsAuth {
    method: Option<Method>,
}

#[derive(Clone)]
enum Method {
    /// A user JWT and the key pair that signs nonces for it.
    Creds {
        path: PathBuf,
        jwt: String,
        key: Arc<nkeys::KeyPair>,
    },
    /// An nkey user's seed.
    Nkey { path: PathBuf, seed: String },
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.method {
            None => f.write_str("NatsAuth(none)"),
            Some(Method::Creds { path, .. }) => write!(f, "NatsAuth(creds file {path:?})"),
            Some(Method::Nkey { path, .. }) => write!(f, "NatsAuth(nkey file {path:?})"),
        }
    }
}

impl PartialEq for NatsAuth {
    fn eq(&self, other: &Self) -> bool {
        match (&self.method, &other.method) {
            (None, None) => true,
            (Some(Method::Creds { path: a, .. }), Some(Method::Creds { path: b, .. }))
            | (Some(Method::Nkey { path: a, .. }), Some(Method::Nkey { path: b, .. })) => a == b,
            _ => false,
        }
    }
}

/// A NATS credentials or nkey file that cannot be used. Names the variable and the path,
/// never the file's content.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{var}={path:?}: {reason}")]
pub struct NatsAuthError {
    pub var: &'static str,
    pub path: PathBuf,
    pub reason: String,
}

impl NatsAuth {
    /// No authentication beyond the URL.
    pub fn none() -> Self {
        NatsAuth::default()
    }

    /// Whether a file is configured.
    pub fn is_set(&self) -> bool {
        self.method.is_some()
    }

    /// Read and check the configured file (at most one of the two).
    pub fn from_files(
        creds: Option<&Path>,
        nkey: Option<&Path>,
    ) -> Result<NatsAuth, NatsAuthError> {
        match (creds, nkey) {
            (None, None) => Ok(NatsAuth::none()),
            (Some(_), Some(p)) => Err(NatsAuthError {
                var: NKEY_VAR,
                path: p.to_path_buf(),
                reason: format!("set only one of {CREDS_VAR} and {NKEY_VAR}"),
            }),
            (Some(p), None) => {
                let text = read(CREDS_VAR, p)?;
                let (jwt, key) = parse_creds(&text).map_err(|reason| NatsAuthError {
                    var: CREDS_VAR,
                    path: p.to_path_buf(),
                    reason: reason.into(),
                })?;
                Ok(NatsAuth {
                    method: Some(Method::Creds {
                        path: p.to_path_buf(),
                        jwt,
                        key: Arc::new(key),
                    }),
                })
            }
            (None, Some(p)) => {
                let text = read(NKEY_VAR, p)?;
                let seed = parse_nkey(&text).map_err(|reason| NatsAuthError {
                    var: NKEY_VAR,
                    path: p.to_path_buf(),
                    reason: reason.into(),
                })?;
                Ok(NatsAuth {
                    method: Some(Method::Nkey {
                        path: p.to_path_buf(),
                        seed,
                    }),
                })
            }
        }
    }

    /// Apply to connect options.
    pub fn apply(&self, opts: async_nats::ConnectOptions) -> async_nats::ConnectOptions {
        match &self.method {
            None => opts,
            Some(Method::Nkey { seed, .. }) => opts.nkey(seed.clone()),
            Some(Method::Creds { jwt, key, .. }) => {
                let key = key.clone();
                opts.jwt(jwt.clone(), move |nonce| {
                    let key = key.clone();
                    async move { key.sign(&nonce).map_err(async_nats::AuthError::new) }
                })
            }
        }
    }
}

/// Connect options for every NATS connection of ours (the snapshot publisher, the
/// archiver's consumer, the enqueuer's trigger): TLS files and authentication applied.
pub fn options(tls: &crate::tls::TlsFiles, auth: &NatsAuth) -> async_nats::ConnectOptions {
    auth.apply(tls.nats_options(async_nats::ConnectOptions::new()))
}

fn read(var: &'static str, path: &Path) -> Result<String, NatsAuthError> {
    let err = |reason: String| NatsAuthError {
        var,
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    String::from_utf8(bytes).map_err(|_| err("not a text file".into()))
}

/// The user JWT and its key pair from a credentials file (the decorated format `nsc`
/// writes: a `BEGIN NATS USER JWT` block and a `BEGIN USER NKEY SEED` block).
fn parse_creds(text: &str) -> Result<(String, nkeys::KeyPair), &'static str> {
    let jwt = block_after(text, "BEGIN NATS USER JWT").ok_or(
        "no user JWT in the file (expected a -----BEGIN NATS USER JWT----- block, as nsc writes it)",
    )?;
    if jwt.split('.').count() != 3 {
        return Err("the user JWT block does not hold a JWT (header.claims.signature)");
    }
    let seed = block_after(text, "BEGIN USER NKEY SEED")
        .ok_or("no user nkey seed in the file (expected a -----BEGIN USER NKEY SEED----- block)")?;
    let key = user_key(seed)?;
    Ok((jwt.to_string(), key))
}

/// The seed from an nkey file: its one non-empty line, or the seed block of a decorated
/// file.
fn parse_nkey(text: &str) -> Result<String, &'static str> {
    let seed = block_after(text, "BEGIN USER NKEY SEED").unwrap_or_else(|| text.trim());
    if seed.is_empty() {
        return Err("the file is empty (expected a user nkey seed, SU…)");
    }
    user_key(seed)?;
    Ok(seed.to_string())
}

fn user_key(seed: &str) -> Result<nkeys::KeyPair, &'static str> {
    if !seed.starts_with("SU") {
        return Err("not a user nkey seed (a user's seed starts with SU)");
    }
    nkeys::KeyPair::from_seed(seed)
        .map_err(|_| "not a valid nkey seed (its checksum or encoding is wrong)")
}

/// The first non-empty line after the line containing `marker`.
fn block_after<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
    let mut lines = text.lines();
    lines.find(|l| l.contains(marker))?;
    lines
        .map(str::trim)
        .find(|l| !l.is_empty())
        .filter(|l| !l.starts_with("---"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    fn creds(jwt: &str, seed: &str) -> String {
        format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        )
    }

    #[test]
    fn nothing_set_is_no_auth() {
        let a = NatsAuth::from_files(None, None).expect("none");
        assert!(!a.is_set());
        assert_eq!(format!("{a:?}"), "NatsAuth(none)");
    }

    #[test]
    fn a_good_nkey_file_and_creds_file_load_and_never_show_their_secret() {
        let dir = tempfile::tempdir().expect("tempdir");
        let user = nkeys::KeyPair::new_user();
        let seed = user.seed().expect("seed");
        let p = write(dir.path(), "user.nk", &format!("{seed}\n"));
        let a = NatsAuth::from_files(None, Some(&p)).expect("nkey");
        assert!(a.is_set());
        assert!(!format!("{a:?}").contains(&seed));
        let jwt = "eyJhIjoxfQ.eyJiIjoyfQ.c2ln";
        let p = write(dir.path(), "user.creds", &creds(jwt, &seed));
        let a = NatsAuth::from_files(Some(&p), None).expect("creds");
        let shown = format!("{a:?}");
        assert!(!shown.contains(&seed) && !shown.contains(jwt), "{shown}");
    }

    #[test]
    fn bad_files_are_errors_naming_the_variable_without_their_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope");
        let e = NatsAuth::from_files(Some(&missing), None).unwrap_err();
        assert_eq!(e.var, CREDS_VAR);
        assert!(e.reason.starts_with("cannot read it"), "{e}");
        let e = NatsAuth::from_files(None, Some(&missing)).unwrap_err();
        assert_eq!(e.var, NKEY_VAR);

        let secretish = "SUAGARBAGEGARBAGEGARBAGEGARBAGEGARBAGEGARBAGE";
        let garbage = write(dir.path(), "g", &format!("{secretish}\n"));
        for e in [
            NatsAuth::from_files(None, Some(&garbage)).unwrap_err(),
            NatsAuth::from_files(Some(&garbage), None).unwrap_err(),
        ] {
            let text = e.to_string();
            assert!(!text.contains(secretish), "{text}");
            assert!(text.starts_with(e.var), "{text}");
        }
        // An account seed is not a user's.
        let account = nkeys::KeyPair::new_account().seed().expect("seed");
        let p = write(dir.path(), "acc.nk", &account);
        let e = NatsAuth::from_files(None, Some(&p)).unwrap_err();
        assert!(e.reason.contains("SU"), "{e}");
        assert!(!e.to_string().contains(&account));
        // A creds file without a JWT, and one whose seed is damaged.
        let user = nkeys::KeyPair::new_user().seed().expect("seed");
        let p = write(
            dir.path(),
            "c1",
            &format!("-----BEGIN USER NKEY SEED-----\n{user}\n"),
        );
        let e = NatsAuth::from_files(Some(&p), None).unwrap_err();
        assert!(e.reason.contains("no user JWT"), "{e}");
        let mut damaged = user.clone();
        damaged.replace_range(10..11, if &user[10..11] == "A" { "B" } else { "A" });
        let p = write(dir.path(), "c2", &creds("a.b.c", &damaged));
        let e = NatsAuth::from_files(Some(&p), None).unwrap_err();
        assert!(e.reason.contains("not a valid nkey seed"), "{e}");
        assert!(!e.to_string().contains(&damaged));
        // Both at once.
        let e = NatsAuth::from_files(Some(&p), Some(&p)).unwrap_err();
        assert!(e.reason.contains("only one"), "{e}");
        // An empty nkey file.
        let p = write(dir.path(), "empty", "\n");
        let e = NatsAuth::from_files(None, Some(&p)).unwrap_err();
        assert!(e.reason.contains("empty"), "{e}");
    }
}
