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
//! Only the archiver records the key (it is the one process that seals texts): the first
//! archiver that starts with a key stores its check value, after checking the key
//! against the oldest archived texts if there are any. The oldest, because an archiver
//! that ran with a wrong key before this check existed sealed only the newer rows (new
//! devices' first versions, orphans): the key that opens the oldest is the archive's
//! own. Every process after it — the archiver, the enqueuer serving the history pages,
//! `rosbackup history` — must open the stored value. A reader before any archiver
//! recorded one only checks the texts and records nothing, so a mistyped key in a
//! dashboard or a one-off command can never become the archive's. A database not yet
//! migrated to the table has its texts checked only.

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
     the key check value the archiver stored, or with none stored yet, the oldest archived \
     configs); start with the key the archived configs were sealed with";

/// A refused key as the configuration error every process reports (exit 2), naming the
/// variable and never the key.
pub fn wrong_key_error() -> rosbackup_core::config::ConfigError {
    rosbackup_core::config::ConfigError {
        var: "ARCHIVE_ENCRYPTION_KEY".into(),
        value: None,
        reason: WRONG_ARCHIVE_KEY.into(),
    }
}

/// How [`ArchiveStore::check_key`] accepted the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKeyCheck {
    /// It opens the stored check value.
    Matches,
    /// There was none; the key opened the oldest archived texts (or there are none) and
    /// its check value is stored now (the archiver only).
    Recorded,
    /// There was none, and this check does not record one (a reader), or the database is
    /// not migrated to the check table; the key opened the oldest archived texts (or
    /// there are none).
    NotRecorded,
}

impl ArchiveKeyCheck {
    /// For the start-up log line.
    pub fn describe(self) -> &'static str {
        match self {
            ArchiveKeyCheck::Matches => "matches the archive's key check value",
            ArchiveKeyCheck::Recorded => "recorded as the archive's key (none was stored)",
            ArchiveKeyCheck::NotRecorded => {
                "opens the oldest archived configs (no key recorded yet: the archiver records it)"
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

/// The oldest archived texts: versions, else (an archive of orphans only) orphans. The
/// key must open the oldest: AES-GCM does not open under another key, and a damaged
/// archive's rows under a wrong key are newer than it. Failing that, more than half of
/// the eight oldest, so that one altered row does not condemn the right key.
const OLDEST_SQL: &str = "SELECT device_id, sha256, text_enc FROM config_versions \
     ORDER BY id LIMIT 8";
const OLDEST_ORPHANS_SQL: &str = "SELECT device_id, sha256, text_enc FROM archive_orphans \
     ORDER BY id LIMIT 8";

/// Does the key open the oldest archived texts (true when there are none)?
async fn opens_the_oldest_texts(
    codec: &Codec,
    conn: &mut sqlx::PgConnection,
) -> Result<bool, ArchiveError> {
    let mut rows: Vec<(Uuid, String, Vec<u8>)> =
        sqlx::query_as(OLDEST_SQL).fetch_all(&mut *conn).await?;
    if rows.is_empty() {
        rows = sqlx::query_as(OLDEST_ORPHANS_SQL)
            .fetch_all(&mut *conn)
            .await?;
    }
    let opens: Vec<bool> = rows
        .iter()
        .map(|(d, sha, enc)| codec.opens(d, sha, enc))
        .collect();
    Ok(opens_the_oldest(&opens))
}

/// The rule on the oldest texts, oldest first: none, or the oldest opens, or more than
/// half of them do.
fn opens_the_oldest(opens: &[bool]) -> bool {
    match opens.first() {
        None | Some(true) => true,
        Some(false) => opens.iter().filter(|o| **o).count() * 2 > opens.len(),
    }
}

/// Whether a check may store the key's check value when none is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// The archiver: the one process that seals texts under the key.
    Yes,
    /// Readers (the dashboard, `rosbackup history`): check only.
    No,
}

impl ArchiveStore {
    /// Is the archive's key the one that sealed the stored texts? Checked by every process
    /// that seals or opens archived texts before it does. A wrong key is
    /// [`ArchiveError::WrongKey`]. With [`Record::Yes`] (the archiver) and no value
    /// stored, the key's check value is recorded under a table lock, so two first
    /// archivers with different keys cannot both record theirs.
    pub async fn check_key(&self, record: Record) -> Result<ArchiveKeyCheck, ArchiveError> {
        let codec = self.codec();
        let pool = self.store().pool();
        let stored: Result<Option<Vec<u8>>, sqlx::Error> =
            sqlx::query_scalar("SELECT sealed FROM archive_key_check")
                .fetch_optional(pool)
                .await;
        let migrated = match stored {
            Ok(Some(check)) => return verdict(codec, &check),
            Ok(None) => true,
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P01") => false,
            Err(e) => return Err(e.into()),
        };
        if record == Record::No || !migrated {
            let mut conn = pool.acquire().await?;
            return if opens_the_oldest_texts(codec, &mut conn).await? {
                Ok(ArchiveKeyCheck::NotRecorded)
            } else {
                Err(ArchiveError::WrongKey)
            };
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
        if !opens_the_oldest_texts(codec, &mut tx).await? {
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
    fn the_oldest_text_decides_else_a_majority_of_the_oldest() {
        assert!(opens_the_oldest(&[]));
        assert!(opens_the_oldest(&[true, false, false]));
        // A damaged archive: newer rows under another key never make that key the one.
        assert!(!opens_the_oldest(&[false, true]));
        assert!(!opens_the_oldest(&[false, true, false, true]));
        // One altered oldest row does not condemn the key that opens the rest.
        assert!(opens_the_oldest(&[
            false, true, true, true, true, true, true, true
        ]));
        assert!(!opens_the_oldest(&[false]));
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
