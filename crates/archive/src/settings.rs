//! The archiver's settings from the environment (`ARCHIVE_*`). They live here, not in
//! `rosbackup_core::config`, because they build this crate's types: the core knows the
//! variables' names (`config::VARS`, checked against the README) but not the archive.

use crate::webhook::{Webhook, WebhookSettings};
use crate::{ArchiverSettings, Retention};
use rosbackup_core::config::{self, ConfigError, Env};

/// The archiver's settings (`ARCHIVE_*`).
pub fn from_env(env: &Env) -> Result<ArchiverSettings, ConfigError> {
    let durable = env.raw("ARCHIVE_CONSUMER");
    if durable.is_empty()
        || !durable
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(env.error(
            "ARCHIVE_CONSUMER",
            &durable,
            "expected letters, digits, '_' or '-'",
        ));
    }
    let positive_i32 = |name: &str| -> Result<i32, ConfigError> {
        let n = env.positive(name)?;
        i32::try_from(n).map_err(|_| env.error(name, &n.to_string(), "too large"))
    };
    let dashboard_url = if env.is_set("ARCHIVE_DASHBOARD_URL") {
        Some(env.url("ARCHIVE_DASHBOARD_URL", &["http", "https"])?)
    } else {
        None
    };
    let webhook = if env.is_set("ARCHIVE_WEBHOOK_URL") {
        // Not `env.url`: a webhook URL often carries its token in the path, and an error
        // must not print it.
        let url = env.raw("ARCHIVE_WEBHOOK_URL").trim().to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError {
                var: "ARCHIVE_WEBHOOK_URL".into(),
                value: None,
                reason: "expected a URL starting with http:// or https://".into(),
            });
        }
        let settings = WebhookSettings::new(url, dashboard_url);
        Webhook::new(settings.clone()).map_err(|e| ConfigError {
            var: "ARCHIVE_WEBHOOK_URL".into(),
            value: None,
            reason: e.to_string(),
        })?;
        Some(settings)
    } else {
        None
    };
    Ok(ArchiverSettings {
        durable,
        ack_wait: env.seconds("ARCHIVE_ACK_WAIT", 1)?,
        recent_versions: i64::from(positive_i32("ARCHIVE_RECENT_VERSIONS")?),
        retention: Retention {
            keep_versions: positive_i32("ARCHIVE_KEEP_VERSIONS")?,
            max_age_days: positive_i32("ARCHIVE_MAX_AGE_DAYS")?,
        },
        git_dir: env
            .is_set("ARCHIVE_GIT_DIR")
            .then(|| std::path::PathBuf::from(env.raw("ARCHIVE_GIT_DIR").trim())),
        webhook,
        snapshot_keys: config::snapshot_keys(env)?,
        ..ArchiverSettings::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archiver_settings_defaults_and_errors() {
        let s = from_env(&Env::from_pairs([])).unwrap();
        assert_eq!(s.durable, "rosbackup-archiver");
        assert_eq!(s.recent_versions, 10);
        assert!(s.git_dir.is_none() && s.webhook.is_none());
        let s = from_env(&Env::from_pairs([
            ("ARCHIVE_WEBHOOK_URL", "https://hooks.example/t/abc"),
            ("ARCHIVE_DASHBOARD_URL", "https://dash.example"),
            ("ARCHIVE_GIT_DIR", "/var/lib/rosbackup/git"),
        ]))
        .unwrap();
        assert_eq!(
            s.webhook.unwrap().dashboard_url.as_deref(),
            Some("https://dash.example")
        );
        for (var, val) in [
            ("ARCHIVE_CONSUMER", "a.b"),
            ("ARCHIVE_RECENT_VERSIONS", "0"),
            ("ARCHIVE_KEEP_VERSIONS", "x"),
            ("ARCHIVE_MAX_AGE_DAYS", "99999999999"),
            ("ARCHIVE_WEBHOOK_URL", "ftp://x"),
            ("ARCHIVE_DASHBOARD_URL", "dash"),
        ] {
            let e = from_env(&Env::from_pairs([(var, val)])).unwrap_err();
            assert_eq!(e.var, var, "{e}");
        }
        let e = from_env(&Env::from_pairs([(
            "ARCHIVE_WEBHOOK_URL",
            "ftp://u:tok3n@x",
        )]))
        .unwrap_err();
        assert!(!e.to_string().contains("tok3n"), "{e}");
        let e = config::archive_key(&Env::from_pairs([])).unwrap_err();
        assert_eq!(e.var, "ARCHIVE_ENCRYPTION_KEY");
        let e = config::archive_key(&Env::from_pairs([("ARCHIVE_ENCRYPTION_KEY", "c2hvcnQ=")]))
            .unwrap_err();
        assert!(!e.to_string().contains("c2hvcnQ"), "{e}");
    }
}
