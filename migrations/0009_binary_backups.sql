-- Binary RouterOS backups (`/system backup save` files fetched over SFTP, issue #19).
--
-- Stored in PostgreSQL beside the device and its config history rather than in the
-- JetStream object store: a binary is written by the worker in the job that exported the
-- config, must never travel in a NATS event, is read only by admins, and is deleted by the
-- same retention pass as the history. The file and its password are AES-256-GCM under
-- CREDENTIAL_ENCRYPTION_KEY (the key every worker already holds), with associated data
-- binding the device, the file's SHA-256 and the config hash.

CREATE TABLE binary_backups (
    id                bigserial PRIMARY KEY,
    device_id         uuid NOT NULL,
    tenant_id         uuid NOT NULL,
    -- One binary per job at most (a re-run of the same job stores nothing new).
    job_id            text NOT NULL UNIQUE,
    collected_at      timestamptz NOT NULL,
    -- Size and SHA-256 (hex) of the `.backup` file as fetched (before our encryption).
    size              bigint NOT NULL,
    sha256            text NOT NULL,
    -- The normalized hash of the export taken in the same session: links the binary to
    -- the config version with that hash (config_versions.sha256).
    config_sha256     text NOT NULL,
    routeros_version  text,
    -- `aes-sha256` or `rc4`: the file's own encryption (the device's password).
    format            text NOT NULL,
    -- 12-byte nonce || ciphertext || tag.
    file_enc          bytea NOT NULL,
    password_enc      bytea NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX binary_backups_device ON binary_backups (device_id, collected_at DESC, id DESC);
CREATE INDEX binary_backups_collected ON binary_backups (collected_at);

-- Per device: the password its backups are encrypted with (generated once), when the
-- newest binary was taken, and the binary step's own failures and backoff (never the
-- text backup's).
CREATE TABLE binary_state (
    device_id            uuid PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    password_enc         bytea NOT NULL,
    last_binary_at       timestamptz,
    consecutive_failures integer NOT NULL DEFAULT 0,
    retry_after          timestamptz,
    last_error_kind      text,
    last_error_message   text
);

-- The binary step's run history (the text backup's is backup_runs).
CREATE TABLE binary_runs (
    id             bigserial PRIMARY KEY,
    device_id      uuid NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    job_id         text NOT NULL,
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz NOT NULL,
    status         text NOT NULL CHECK (status IN ('success', 'failed')),
    error_kind     text,
    error_message  text,
    size           bigint,
    binary_id      bigint REFERENCES binary_backups (id) ON DELETE SET NULL,
    removed        boolean
);

CREATE INDEX binary_runs_device ON binary_runs (device_id, id DESC);

-- Who downloaded which binary or asked for its password.
CREATE TABLE binary_audit (
    id          bigserial PRIMARY KEY,
    binary_id   bigint NOT NULL,
    device_id   uuid NOT NULL,
    actor       text NOT NULL,
    action      text NOT NULL CHECK (action IN ('download', 'password')),
    at          timestamptz NOT NULL DEFAULT now()
);

-- A tenant's mode (no row: the fleet's CONFIG_BACKUP_BINARY).
CREATE TABLE binary_tenant_mode (
    tenant_id  uuid PRIMARY KEY,
    mode       text NOT NULL CHECK (mode IN ('off', 'on-change', 'always'))
);

-- A device's own mode (NULL: its tenant's or the fleet's CONFIG_BACKUP_BINARY).
ALTER TABLE devices ADD COLUMN backup_binary text
    CHECK (backup_binary IN ('off', 'on-change', 'always'));
