//! Fail fast on a wrong `ARCHIVE_ENCRYPTION_KEY`.
//!
//! Why: every archived text is sealed under the archive key, and an archiver started with
//! another key did not notice. It failed (and retried forever) each snapshot of a device
//! with a history, and archived every new device's first versions under the new key, so
//! the history ended up in two keys and no single key opened all of it. The credential key
//! has had a check value since issue #21 (`credential_key_check`); the archive key gets
//! the same, in a table of its own (`archive_key_check`, migration 0012) and with
//! associated data of its own, so neither key's check value passes for the other's.
//!
//! The first process that starts with an archive key (the archiver, the enqueuer serving
//! the history pages, `rosbackup history`) stores the key's check value, after checking
//! the key against the newest archived texts if there are any; every process after it
//! must open that value. A database not yet migrated to the table has its texts checked
//! only.

use crate::store::ArchiveStore;
use crate::{ArchiveError, Codec};
use uuid::Uuid;

/// The known plaintext of the archive key's check value.
pub const ARCHIVE_KEY_CHECK_PLAIN: &[u8] = b"rosbackup: this key seals the archived configs";
/// Its associated data (not the credential check's: one key's value never passes for the
/// other's).
const ARCHIVE_KEY_CHECK_AAD: &[u8] = b"rosbackup archive key check v1";

/// The end of the message of a refused archive key (after the variable's name).
pub const WRONG_ARCHIVE_KEY: &str = "is not the key of this archive (it does not open \
     the key check value stored by the first process that started with an archive key, nor \
     the newest archived configs); start with the key the archived configs were sealed with";

/// How [`ArchiveStore::check_key`] accepted the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKeyCheck {
    /// It opens the stored check value.
    Matches,
    /// There was none; the key opened the newest archived texts (or there are none) and
    /// its check value is stored now.
    Recorded,
    /// The database is not migrated to the check table; the key opened an archived text
    /// (or there are none).
    NotRecorded,
}

impl ArchiveKeyCheck {
    /// For the start-up log line.
    pub fn describe(self) -> &'static str {
        match self {
            ArchiveKeyCheck::Matches => "matches the archive's key check value",
            ArchiveKeyCheck::Recorded => "recorded as the archive's key (none was stored)",
            ArchiveKeyCheck::NotRecorded => {
                "opens the archived configs (not recorded: the database is not migrated)"
            }
        }
    }
}

impl Codec {
    /// The check value: [`ARCHIVE_KEY_CHECK_PLAIN`] sealed under the archive key.
    pub fn check_value(&self) -> Vec<u8> {
        self.key
            .seal_bytes(ARCHIVE_KEY_CHECK_AAD, ARCHIVE_KEY_CHECK_PLAIN)
    }

    /// Does the key open `check` (a [`check_value`](Self::check_value)) to the known text?
    pub fn opens_check_value(&self, check: &[u8]) -> bool {
        self.key
            .open_bytes(ARCHIVE_KEY_CHECK_AAD, check)
            .is_ok_and(|p| p == ARCHIVE_KEY_CHECK_PLAIN)
    }
}

fn verdict(codec: &Codec, check: &[u8]) -> Result<ArchiveKeyCheck, ArchiveError> {
    if codec.opens_check_value(check) {
        Ok(ArchiveKeyCheck::Matches)
    } else {
        Err(ArchiveError::WrongKey)
    }
}

/// The newest archived texts, versions and orphans (a few of each: one that opens is
/// proof enough, since AES-GCM does not open under another key; several so that one
/// altered row does not condemn the right key).
const SAMPLE_SQL: &str = "(SELECT device_id, sha256, text_enc FROM config_versions \
     ORDER BY id DESC LIMIT 8) UNION ALL (SELECT device_id, sha256, text_enc \
     FROM archive_orphans ORDER BY id DESC LIMIT 8)";

/// Does the key open one of the newest archived texts (true when there are none)?
async fn opens_an_archived_text(
    codec: &Codec,
    conn: &mut sqlx::PgConnection,
) -> Result<bool, ArchiveError> {
    let rows: Vec<(Uuid, String, Vec<u8>)> =
        sqlx::query_as(SAMPLE_SQL).fetch_all(&mut *conn).await?;
    Ok(rows.is_empty() || rows.iter().any(|(d, sha, enc)| codec.opens(d, sha, enc)))
}

impl ArchiveStore {
    /// Is the archive's key the one that sealed the stored texts? Checked by every process
    /// that seals or opens archived texts before it does. A wrong key is
    /// [`ArchiveError::WrongKey`]; the check value is recorded under a table lock, so two
    /// first processes with different keys cannot both record theirs.
    pub async fn check_key(&self) -> Result<ArchiveKeyCheck, ArchiveError> {
        let codec = self.codec();
        let pool = self.store().pool();
        let stored: Result<Option<Vec<u8>>, sqlx::Error> =
            sqlx::query_scalar("SELECT sealed FROM archive_key_check")
                .fetch_optional(pool)
                .await;
        match stored {
            Ok(Some(check)) => return verdict(codec, &check),
            Ok(None) => {}
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P01") => {
                let mut conn = pool.acquire().await?;
                return if opens_an_archived_text(codec, &mut conn).await? {
                    Ok(ArchiveKeyCheck::NotRecorded)
                } else {
                    Err(ArchiveError::WrongKey)
                };
            }
            Err(e) => return Err(e.into()),
        }
        let mut tx = pool.begin().await?;
        sqlx::query("LOCK TABLE archive_key_check IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        let check: Option<Vec<u8>> = sqlx::query_scalar("SELECT sealed FROM archive_key_check")
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(check) = check {
            return verdict(codec, &check);
        }
        if !opens_an_archived_text(codec, &mut tx).await? {
            return Err(ArchiveError::WrongKey);
        }
        sqlx::query("INSERT INTO archive_key_check (id, sealed) VALUES (true, $1)")
            .bind(codec.check_value())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(ArchiveKeyCheck::Recorded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rosbackup_core::credentials::CredentialKey;

    fn codec() -> Codec {
        let b64 = CredentialKey::generate_base64();
        Codec::new(CredentialKey::from_base64(&b64).expect("a generated key decodes"))
    }

    #[test]
    fn the_check_value_opens_only_under_its_key() {
        let (a, b) = (codec(), codec());
        let check = a.check_value();
        assert!(a.opens_check_value(&check));
        assert!(!b.opens_check_value(&check));
        assert!(!a.opens_check_value(&check[..check.len() - 1]));
    }

    #[test]
    fn the_credential_keys_check_value_does_not_pass_for_the_archives() {
        let b64 = CredentialKey::generate_base64();
        let key = CredentialKey::from_base64(&b64).expect("a generated key decodes");
        let codec = Codec::new(key.clone());
        assert!(!codec.opens_check_value(&key.check_value()));
        assert!(!key.opens_check_value(&codec.check_value()));
    }

    #[test]
    fn a_sealed_text_opens_only_under_its_key_device_and_hash() {
        let (a, b) = (codec(), codec());
        let device = Uuid::new_v4();
        let text = b"/system identity\nset name=r1\n";
        let sha = rosbackup_core::normalize::hash(text);
        let sealed = a.seal(&device, &sha, text);
        assert!(a.opens(&device, &sha, &sealed));
        assert!(!b.opens(&device, &sha, &sealed));
        assert!(!a.opens(&Uuid::new_v4(), &sha, &sealed));
    }
}
