-- Config history (the archiver, `src/archive/`): one row per distinct configuration of a
-- device, one row per snapshot received, snapshots of devices we do not know yet, per-tenant
-- retention, and the webhook outbox.
--
-- No foreign key to `devices`: history outlives a removed device (audit), and orphans are
-- by definition of devices that are not there yet.

CREATE TABLE config_versions (
    id                bigserial PRIMARY KEY,
    device_id         uuid NOT NULL,
    tenant_id         uuid NOT NULL,
    -- SHA-256 (hex) of the normalized text (normalization below, always 2 today).
    sha256            text NOT NULL,
    size              bigint NOT NULL,
    -- collected_at of the first and last snapshot with this text (the publisher's clock).
    first_seen_at     timestamptz NOT NULL,
    last_seen_at      timestamptz NOT NULL,
    seen_count        bigint NOT NULL DEFAULT 1,
    routeros_version  text,
    normalization     smallint NOT NULL,
    -- AES-256-GCM(zstd(normalized text)) under ARCHIVE_ENCRYPTION_KEY: 12-byte nonce ||
    -- ciphertext || tag; associated data binds device id and sha256.
    text_enc          bytea NOT NULL,
    -- The device's current version when this one appeared, and the menus that differ.
    previous_id       bigint REFERENCES config_versions (id) ON DELETE SET NULL,
    changed_menus     text[] NOT NULL DEFAULT '{}',
    added_lines       integer NOT NULL DEFAULT 0,
    removed_lines     integer NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX config_versions_device_seen ON config_versions (device_id, last_seen_at DESC, id DESC);
CREATE INDEX config_versions_device_id ON config_versions (device_id, id DESC);
CREATE INDEX config_versions_tenant_first ON config_versions (tenant_id, first_seen_at DESC);
CREATE INDEX config_versions_first ON config_versions (first_seen_at DESC);
CREATE INDEX config_versions_previous ON config_versions (previous_id);

CREATE TABLE config_sightings (
    id                 bigserial PRIMARY KEY,
    -- The message's identity: its Nats-Msg-Id, else "<stream>:<sequence>". A redelivered
    -- message finds its key here and changes nothing.
    msg_key            text NOT NULL UNIQUE,
    stream_sequence    bigint,
    device_id          uuid NOT NULL,
    tenant_id          uuid NOT NULL,
    version_id         bigint REFERENCES config_versions (id) ON DELETE SET NULL,
    sha256             text NOT NULL,
    collected_at       timestamptz NOT NULL,
    received_at        timestamptz NOT NULL DEFAULT now(),
    -- The normalization the publisher used (we re-normalize with v2 before comparing).
    event_normalization smallint NOT NULL,
    new_version        boolean NOT NULL
);

CREATE INDEX config_sightings_device ON config_sightings (device_id, collected_at DESC);
CREATE INDEX config_sightings_version ON config_sightings (version_id);
CREATE INDEX config_sightings_collected ON config_sightings (collected_at);

-- Snapshots of devices that are not in `devices` (yet): kept, encrypted like versions, and
-- re-homed into the history when the device appears.
CREATE TABLE archive_orphans (
    id                 bigserial PRIMARY KEY,
    msg_key            text NOT NULL UNIQUE,
    stream_sequence    bigint,
    device_id          uuid NOT NULL,
    -- The tenant the event claimed (not trusted: the device row decides on re-homing).
    event_tenant       text NOT NULL,
    sha256             text NOT NULL,
    size               bigint NOT NULL,
    collected_at       timestamptz NOT NULL,
    received_at        timestamptz NOT NULL DEFAULT now(),
    routeros_version   text,
    event_normalization smallint NOT NULL,
    text_enc           bytea NOT NULL
);

CREATE INDEX archive_orphans_device ON archive_orphans (device_id, collected_at);

-- Per-tenant retention overrides; NULL columns take the archiver's defaults
-- (ARCHIVE_KEEP_VERSIONS, ARCHIVE_MAX_AGE_DAYS).
CREATE TABLE archive_retention (
    tenant_id      uuid PRIMARY KEY,
    keep_versions  integer CHECK (keep_versions > 0),
    max_age_days   integer CHECK (max_age_days > 0),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Webhook outbox: written in the same transaction as the new version, delivered (with
-- retries) by any archiver replica.
CREATE TABLE archive_notifications (
    version_id       bigint PRIMARY KEY REFERENCES config_versions (id) ON DELETE CASCADE,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    failed_at        timestamptz,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX archive_notifications_due ON archive_notifications (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;
