-- Fail fast on a wrong ARCHIVE_ENCRYPTION_KEY, as 0005 does for the credential key.
--
-- The archive's key check value: a known plaintext sealed under the archive key
-- (AES-256-GCM, nonce || ciphertext || tag, associated data of its own; see
-- crates/archive/src/keycheck.rs). At most one row. The first archiver that starts with
-- an archive key stores it (after checking the key against the oldest archived texts, if
-- there are any; readers record nothing); the archiver, the dashboard and `rosbackup
-- history` then refuse a key that does not open it, instead of archiving new versions
-- under a second key beside the old ones (a history no single key opens).
CREATE TABLE archive_key_check (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    sealed      bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
