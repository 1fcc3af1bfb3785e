//! TLS to Redis and NATS with a private CA and client certificates.
//!
//! Why: the Web PKI roots built into rustls cover managed services, but most operators run
//! Redis and NATS behind their own CA, and often require client certificates (Redis's
//! TLS mode verifies clients by default; NATS does with `verify: true`). PostgreSQL needs
//! nothing from here: its URL carries libpq's `sslmode`, `sslrootcert`, `sslcert` and
//! `sslkey`, which sqlx reads. Redis and NATS URLs have no such parameters, so the files
//! come from `ROSBACKUP_TLS_CA_FILE`, `ROSBACKUP_TLS_CERT_FILE` and
//! `ROSBACKUP_TLS_KEY_FILE` and apply to both.
//!
//! The files are read once at startup ([`TlsFiles::load`]), so a missing or unreadable
//! file is a configuration error naming its variable (exit 2), not a connection that fails
//! later. The key's contents never reach an error message.

use std::path::{Path, PathBuf};

/// Certificate files for TLS connections to Redis and NATS. All `None`: Web PKI roots, no
/// client certificate (the default).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM bundle of the CA certificates to trust instead of the Web PKI roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for mutual TLS; set together with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish()
    }
}

/// A TLS file that cannot be used. `var` names the environment variable it came from.
#[derive(Debug, thiserror::Error)]
#[error("{var}={path:?}: {reason}")]
pub struct TlsFileError {
    pub var: &'static str,
    pub path: PathBuf,
    pub reason: String,
}

/// Variable names, in one place for the config table and the errors.
pub const CA_VAR: &str = "ROSBACKUP_TLS_CA_FILE";
pub const CERT_VAR: &str = "ROSBACKUP_TLS_CERT_FILE";
pub const KEY_VAR: &str = "ROSBACKUP_TLS_KEY_FILE";

impl TlsFiles {
    /// Whether any file is configured.
    pub fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.cert_file.is_none() && self.key_file.is_none()
    }

    /// Check that every configured file is readable PEM of the right kind, and that a
    /// certificate comes with its key.
    pub fn check(&self) -> Result<(), TlsFileError> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => {
                return Err(TlsFileError {
                    var: KEY_VAR,
                    path: PathBuf::new(),
                    reason: format!("must be set when {CERT_VAR} is"),
                });
            }
            (None, Some(p)) => {
                return Err(TlsFileError {
                    var: CERT_VAR,
                    path: p.clone(),
                    reason: format!("must be set when {KEY_VAR} is"),
                });
            }
            _ => {}
        }
        if let Some(p) = &self.ca_file {
            pem_with(CA_VAR, p, &["CERTIFICATE"])?;
        }
        if let Some(p) = &self.cert_file {
            pem_with(CERT_VAR, p, &["CERTIFICATE"])?;
        }
        if let Some(p) = &self.key_file {
            pem_with(
                KEY_VAR,
                p,
                &["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"],
            )?;
        }
        Ok(())
    }

    /// A Redis client for `url` with these files (a plain `Client::open` when there are
    /// none). The files only matter for `rediss://` URLs.
    pub fn redis_client(&self, url: &str) -> Result<redis::Client, RedisTlsError> {
        if self.is_empty() {
            return Ok(redis::Client::open(url)?);
        }
        let read = |var: &'static str, p: &Path| {
            std::fs::read(p).map_err(|e| {
                RedisTlsError::File(TlsFileError {
                    var,
                    path: p.to_path_buf(),
                    reason: e.to_string(),
                })
            })
        };
        let root_cert = match &self.ca_file {
            Some(p) => Some(read(CA_VAR, p)?),
            None => None,
        };
        let client_tls = match (&self.cert_file, &self.key_file) {
            (Some(c), Some(k)) => Some(redis::ClientTlsConfig {
                client_cert: read(CERT_VAR, c)?,
                client_key: read(KEY_VAR, k)?,
            }),
            _ => None,
        };
        Ok(redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls,
                root_cert,
            },
        )?)
    }

    /// Apply these files to NATS connect options. A CA replaces the Web PKI roots.
    pub fn nats_options(&self, mut opts: async_nats::ConnectOptions) -> async_nats::ConnectOptions {
        if let Some(ca) = &self.ca_file {
            opts = opts.add_root_certificates(ca.clone());
        }
        if let (Some(c), Some(k)) = (&self.cert_file, &self.key_file) {
            opts = opts.add_client_certificate(c.clone(), k.clone());
        }
        opts
    }
}

/// A Redis client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RedisTlsError {
    #[error(transparent)]
    File(#[from] TlsFileError),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// The file must exist, be readable, and hold at least one PEM block with one of `labels`.
fn pem_with(var: &'static str, path: &Path, labels: &[&str]) -> Result<(), TlsFileError> {
    let err = |reason: String| TlsFileError {
        var,
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let text = String::from_utf8_lossy(&bytes);
    let found = labels
        .iter()
        .any(|l| text.contains(&format!("-----BEGIN {l}-----")));
    if found {
        Ok(())
    } else {
        Err(err(format!(
            "no PEM block of type {} in the file",
            labels.join(" / ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n";

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    #[test]
    fn empty_is_fine_and_builds_a_plain_client() {
        let t = TlsFiles::default();
        assert!(t.is_empty());
        t.check().expect("nothing to check");
        t.redis_client("redis://127.0.0.1:6379/0").expect("client");
    }

    #[test]
    fn certificate_needs_its_key_and_the_other_way_round() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = write(dir.path(), "c.pem", CERT);
        let key = write(dir.path(), "k.pem", KEY);
        let e = TlsFiles {
            cert_file: Some(cert.clone()),
            ..TlsFiles::default()
        }
        .check()
        .expect_err("cert without key");
        assert_eq!(e.var, KEY_VAR);
        let e = TlsFiles {
            key_file: Some(key.clone()),
            ..TlsFiles::default()
        }
        .check()
        .expect_err("key without cert");
        assert_eq!(e.var, CERT_VAR);
        TlsFiles {
            ca_file: Some(cert.clone()),
            cert_file: Some(cert),
            key_file: Some(key),
        }
        .check()
        .expect("complete set");
    }

    #[test]
    fn missing_or_wrong_files_name_their_variable_and_never_show_key_text() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = TlsFiles {
            ca_file: Some(dir.path().join("nope.pem")),
            ..TlsFiles::default()
        }
        .check()
        .expect_err("missing CA");
        assert_eq!(e.var, CA_VAR);
        // A key given where the CA belongs: wrong kind, and the key text is not echoed.
        let key = write(dir.path(), "k.pem", KEY);
        let e = TlsFiles {
            ca_file: Some(key.clone()),
            ..TlsFiles::default()
        }
        .check()
        .expect_err("key as CA");
        assert_eq!(e.var, CA_VAR);
        assert!(!e.to_string().contains("MIIB"), "{e}");
        let cert = write(dir.path(), "c.pem", CERT);
        let e = TlsFiles {
            cert_file: Some(cert.clone()),
            key_file: Some(cert),
            ..TlsFiles::default()
        }
        .check()
        .expect_err("certificate as key");
        assert_eq!(e.var, KEY_VAR);
        assert!(e.to_string().contains(KEY_VAR));
    }
}
