-- Fail fast on a wrong CREDENTIAL_ENCRYPTION_KEY (issue #21).
--
-- The key check value: a known plaintext sealed under the fleet's credential key
-- (AES-256-GCM, nonce || ciphertext || tag, its own associated data; see
-- crates/core/src/credentials.rs). At most one row. The first process that starts with a
-- key stores it (after checking the key against the stored passwords, if there are any);
-- every worker, enqueuer and CLI command that seals or opens passwords then refuses to
-- start with a key that does not open it. `rosbackup devices rotate-key` replaces it in
-- the transaction that re-seals the passwords.
CREATE TABLE credential_key_check (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    sealed      bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- A password the worker's key cannot open blocks its device (credentials_unreadable)
-- instead of being retried against a key that cannot change by itself.
ALTER TABLE devices DROP CONSTRAINT devices_blocked_reason_check;
ALTER TABLE devices ADD CONSTRAINT devices_blocked_reason_check
    CHECK (blocked_reason IN ('auth_failed', 'host_key_mismatch', 'credentials_unreadable'));
