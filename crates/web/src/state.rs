//! The state every handler shares ([`WebState`]) and the web settings.
//!
//! It sits at the bottom of the web crate: it imports no other web module, and every
//! module may depend on it.

use rosbackup_core::access::Access;
use rosbackup_core::credentials::CredentialKey;
use rosbackup_core::metrics::Metrics;
use rosbackup_core::queue::Queue;
use rosbackup_core::report::Report;
use rosbackup_core::schedule::ScheduleSettings;
use rosbackup_core::store::Store;
use std::sync::Arc;
use std::time::Duration;

/// How the web layer authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Tokens and sessions (the default).
    Required,
    /// `--insecure-no-auth`: every caller is an admin of every tenant.
    Disabled,
}

/// Web settings.
#[derive(Debug, Clone)]
pub struct WebSettings {
    pub auth: AuthMode,
    /// Browser session lifetime.
    pub session_ttl: Duration,
    /// Mark cookies `Secure` (serve behind TLS).
    pub secure_cookies: bool,
    /// The longest `?wait=true` on a manual backup may wait.
    pub manual_timeout: Duration,
    /// ARCHIVE_ENCRYPTION_KEY: needed to show diffs and download versions (the version
    /// list works without it).
    pub archive_key: Option<CredentialKey>,
    /// The fleet's export timeout and the adaptive ceiling, to show a device's effective
    /// timeout as the workers decide it.
    pub export_timeouts: rosbackup_core::export_timeout::TimeoutSettings,
}

impl Default for WebSettings {
    fn default() -> Self {
        WebSettings {
            auth: AuthMode::Required,
            session_ttl: Duration::from_secs(12 * 3600),
            secure_cookies: false,
            manual_timeout: Duration::from_secs(120),
            archive_key: None,
            export_timeouts: Default::default(),
        }
    }
}

struct Inner {
    store: Store,
    queue: Queue,
    report: Report,
    access: Access,
    /// Needed to create devices and change credentials; `None` makes those refuse.
    key: Option<CredentialKey>,
    schedule: ScheduleSettings,
    metrics: Metrics,
    settings: WebSettings,
    /// The CSRF token when auth is disabled (there is no session to hold one).
    open_csrf: String,
    /// Config history (versions, diffs). Without an archive key it lists versions only.
    history: rosbackup_archive::History,
}

/// Shared state of every web handler.
#[derive(Clone)]
pub struct WebState(Arc<Inner>);

impl std::fmt::Debug for WebState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebState")
            .field("auth", &self.0.settings.auth)
            .finish_non_exhaustive()
    }
}

impl WebState {
    pub fn new(
        store: Store,
        queue: Queue,
        key: Option<CredentialKey>,
        schedule: ScheduleSettings,
        metrics: Metrics,
        settings: WebSettings,
    ) -> WebState {
        use base64::Engine;
        use rand::RngCore;
        let mut csrf = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut csrf);
        let history_key = settings.archive_key.clone().unwrap_or_else(|| {
            // Never opens anything: texts are refused before they are read.
            CredentialKey::from_base64(&CredentialKey::generate_base64())
                .expect("a generated key is valid")
        });
        WebState(Arc::new(Inner {
            history: rosbackup_archive::History::new(store.clone(), history_key),
            report: Report::new(store.clone()),
            access: Access::new(store.clone()),
            store,
            queue,
            key,
            schedule,
            metrics,
            settings,
            open_csrf: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(csrf),
        }))
    }

    pub fn store(&self) -> &Store {
        &self.0.store
    }
    pub fn queue(&self) -> &Queue {
        &self.0.queue
    }
    pub fn report(&self) -> &Report {
        &self.0.report
    }
    pub fn access(&self) -> &Access {
        &self.0.access
    }
    pub fn key(&self) -> Option<&CredentialKey> {
        self.0.key.as_ref()
    }
    pub fn schedule(&self) -> &ScheduleSettings {
        &self.0.schedule
    }
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }
    pub fn settings(&self) -> &WebSettings {
        &self.0.settings
    }
    pub(crate) fn open_csrf(&self) -> &str {
        &self.0.open_csrf
    }
    pub fn history(&self) -> &rosbackup_archive::History {
        &self.0.history
    }
    /// Whether archived texts can be opened (diffs, downloads).
    pub fn can_read_archive(&self) -> bool {
        self.0.settings.archive_key.is_some()
    }
}
