//! Change notifications: an optional webhook (`ARCHIVE_WEBHOOK_URL`) per new version of a
//! device that had one before (a device's first version is not a change: importing a fleet
//! must not send one notification per device).
//!
//! **Outbox, not memory.** The notification row (`archive_notifications`) is written in the
//! same transaction as the new version, so a crash never loses one and any replica can
//! deliver it. Delivery claims due rows with `FOR UPDATE SKIP LOCKED` (two replicas never
//! post the same row at once), POSTs the JSON body and marks the row delivered on a 2xx.
//! Anything else is retried with exponential backoff (`base_backoff` doubling, capped at
//! `max_backoff`) up to `max_attempts`, then marked failed (kept a week for inspection).
//! Delivery is at least once: a receiver that must not act twice dedupes on `version_id`.
//!
//! **Body** (`Content-Type: application/json`): `event` (`config.changed`), `device_id`,
//! `device_name`, `tenant_id`, `version_id`, `previous_version_id`, `old_sha256`,
//! `new_sha256`, `changed_menus`, `added_lines`, `removed_lines`, `at`
//! (first collection, RFC 3339) and `link` (`ARCHIVE_DASHBOARD_URL` +
//! `/devices/<id>/versions/<version>`, null without it). Never config text, never secrets.
//!
//! **HTTP client**: hyper's HTTP/1.1 client connection over a `TcpStream` (hyper is in the
//! tree via axum), with rustls on the `ring` provider and the system's roots for
//! `https://`. One connection per delivery: notifications are rare. The URL may carry a
//! token (path or query): it never appears in logs or errors (only scheme, host and port).

use super::{ArchiveError, ArchiveStore};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper::Uri;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{info, warn};
use uuid::Uuid;

/// Where and how to deliver.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub url: String,
    /// Base of the `link` in the body (the dashboard).
    pub dashboard_url: Option<String>,
    pub max_attempts: i32,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// Connect + request + response, per attempt.
    pub timeout: Duration,
}

impl WebhookSettings {
    pub fn new(url: String, dashboard_url: Option<String>) -> Self {
        WebhookSettings {
            url,
            dashboard_url,
            max_attempts: 12,
            base_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(1800),
            timeout: Duration::from_secs(10),
        }
    }

    /// The delay after the `attempts`-th failed attempt.
    pub fn backoff(&self, attempts: i32) -> Duration {
        let exp = u32::try_from(attempts.clamp(1, 30) - 1).unwrap_or(0);
        self.base_backoff
            .saturating_mul(1u32 << exp.min(20))
            .min(self.max_backoff)
    }
}

/// The JSON body.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Notification {
    pub event: String,
    pub device_id: Uuid,
    pub device_name: String,
    pub tenant_id: Uuid,
    pub version_id: i64,
    pub previous_version_id: Option<i64>,
    pub old_sha256: Option<String>,
    pub new_sha256: String,
    pub changed_menus: Vec<String>,
    pub added_lines: i32,
    pub removed_lines: i32,
    pub at: DateTime<Utc>,
    pub link: Option<String>,
}

/// A parsed, ready webhook target.
#[derive(Clone)]
pub struct Webhook {
    settings: WebhookSettings,
    uri: Uri,
    host: String,
    port: u16,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

impl Webhook {
    /// Parse the URL (`http://` or `https://`) and prepare TLS.
    pub fn new(settings: WebhookSettings) -> Result<Self, ArchiveError> {
        let bad = |why: &str| ArchiveError::Invalid(format!("ARCHIVE_WEBHOOK_URL: {why}"));
        let uri: Uri = settings.url.parse().map_err(|_| bad("not a valid URL"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("expected http:// or https://")),
        };
        let host = uri
            .host()
            .ok_or_else(|| bad("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let mut roots = tokio_rustls::rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
            let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| ArchiveError::Webhook(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
        } else {
            None
        };
        Ok(Webhook {
            settings,
            uri,
            host,
            port,
            tls,
        })
    }

    /// The target without path, query or credentials (for logs).
    pub fn shown(&self) -> String {
        format!(
            "{}://{}:{}",
            self.uri.scheme_str().unwrap_or("http"),
            self.host,
            self.port
        )
    }

    pub fn settings(&self) -> &WebhookSettings {
        &self.settings
    }

    /// Deliver every due notification (a batch at a time). Returns how many were delivered.
    pub async fn deliver_due(&self, archive: &ArchiveStore) -> Result<usize, ArchiveError> {
        let mut delivered = 0;
        loop {
            let claimed: Vec<(i64, i32)> = sqlx::query_as(
                "UPDATE archive_notifications n \
                 SET attempts = n.attempts + 1, next_attempt_at = now() + make_interval(secs => $1) \
                 WHERE n.version_id IN ( \
                   SELECT version_id FROM archive_notifications \
                   WHERE delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at <= now() \
                   ORDER BY next_attempt_at, version_id LIMIT 20 FOR UPDATE SKIP LOCKED) \
                 RETURNING n.version_id, n.attempts",
            )
            .bind(self.settings.timeout.as_secs_f64() * 3.0)
            .fetch_all(archive.store().pool())
            .await?;
            if claimed.is_empty() {
                return Ok(delivered);
            }
            for (version_id, attempts) in claimed {
                let Some(body) = self.notification(archive, version_id).await? else {
                    continue;
                };
                let json =
                    serde_json::to_vec(&body).map_err(|e| ArchiveError::Webhook(e.to_string()))?;
                match self.post(json).await {
                    Ok(status) if (200..300).contains(&status) => {
                        sqlx::query(
                            "UPDATE archive_notifications SET delivered_at = now(), last_error = NULL \
                             WHERE version_id = $1",
                        )
                        .bind(version_id)
                        .execute(archive.store().pool())
                        .await?;
                        info!(device_id = %body.device_id, version_id, attempts, "change notification delivered");
                        delivered += 1;
                    }
                    other => {
                        let why = match other {
                            Ok(status) => format!("HTTP {status}"),
                            Err(e) => e,
                        };
                        let give_up = attempts >= self.settings.max_attempts;
                        let delay = self.settings.backoff(attempts);
                        warn!(device_id = %body.device_id, version_id, attempts, target = %self.shown(),
                              error = %why, give_up, "change notification failed");
                        sqlx::query(
                            "UPDATE archive_notifications SET last_error = $2, \
                               next_attempt_at = now() + make_interval(secs => $3), \
                               failed_at = CASE WHEN $4 THEN now() END \
                             WHERE version_id = $1",
                        )
                        .bind(version_id)
                        .bind(&why)
                        .bind(delay.as_secs_f64())
                        .bind(give_up)
                        .execute(archive.store().pool())
                        .await?;
                    }
                }
            }
        }
    }

    /// The body for one version (None when the version is gone).
    pub async fn notification(
        &self,
        archive: &ArchiveStore,
        version_id: i64,
    ) -> Result<Option<Notification>, ArchiveError> {
        type Row = (
            Uuid,
            Option<String>,
            Uuid,
            Option<i64>,
            Option<String>,
            String,
            Vec<String>,
            i32,
            i32,
            DateTime<Utc>,
        );
        let row: Option<Row> = sqlx::query_as(
            "SELECT v.device_id, d.name, v.tenant_id, v.previous_id, p.sha256, v.sha256, \
               v.changed_menus, v.added_lines, v.removed_lines, v.first_seen_at \
             FROM config_versions v LEFT JOIN devices d ON d.id = v.device_id \
             LEFT JOIN config_versions p ON p.id = v.previous_id WHERE v.id = $1",
        )
        .bind(version_id)
        .fetch_optional(archive.store().pool())
        .await?;
        Ok(row.map(
            |(device_id, name, tenant_id, previous, old, new, menus, added, removed, at)| {
                Notification {
                    event: "config.changed".into(),
                    device_id,
                    device_name: name.unwrap_or_else(|| device_id.to_string()),
                    tenant_id,
                    version_id,
                    previous_version_id: previous,
                    old_sha256: old,
                    new_sha256: new,
                    changed_menus: menus,
                    added_lines: added,
                    removed_lines: removed,
                    at,
                    link: self.settings.dashboard_url.as_ref().map(|base| {
                        format!(
                            "{}/devices/{device_id}/versions/{version_id}",
                            base.trim_end_matches('/')
                        )
                    }),
                }
            },
        ))
    }

    /// POST `body`; the HTTP status, or why there was none.
    pub async fn post(&self, body: Vec<u8>) -> Result<u16, String> {
        tokio::time::timeout(self.settings.timeout, self.post_inner(body))
            .await
            .map_err(|_| format!("no answer within {:?}", self.settings.timeout))?
    }

    async fn post_inner(&self, body: Vec<u8>) -> Result<u16, String> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("connect: {}", e.kind()))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => self.send(tcp, body).await,
            Some(tls) => {
                let name = tokio_rustls::rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|_| "invalid TLS server name".to_string())?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                self.send(stream, body).await
            }
        }
    }

    async fn send<T>(&self, io: T, body: Vec<u8>) -> Result<u16, String>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
                .await
                .map_err(|e| format!("HTTP: {e}"))?;
        let driver = tokio::spawn(conn);
        let path = self
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let authority = match self.uri.port_u16() {
            Some(p) => format!("{}:{p}", self.uri.host().unwrap_or_default()),
            None => self.uri.host().unwrap_or_default().to_string(),
        };
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, "rosbackup-archiver")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("request: {e}"))?;
        let result = sender
            .send_request(request)
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| format!("HTTP: {e}"));
        driver.abort();
        result
    }
}
