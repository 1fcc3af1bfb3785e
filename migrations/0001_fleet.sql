-- The fleet's device store: one row per device with its credentials (encrypted) and its
-- backup state, and one row per backup attempt. PostgreSQL is the source of truth for
-- scheduling; Redis only holds the jobs that are due soon.

CREATE TABLE devices (
    id                        uuid PRIMARY KEY,
    tenant_id                 uuid NOT NULL,
    name                      text NOT NULL,
    host                      text NOT NULL,
    ssh_port                  integer NOT NULL DEFAULT 22 CHECK (ssh_port BETWEEN 1 AND 65535),
    username                  text NOT NULL,
    -- AES-256-GCM: 12-byte nonce || ciphertext || tag, associated data = device id.
    password_enc              bytea NOT NULL,
    ssh_host_key_fingerprint  text,
    routeros_version          text,
    enabled                   boolean NOT NULL DEFAULT true,
    -- Per-device schedule override: an interval, or a cron expression (cron wins).
    backup_interval_seconds   integer CHECK (backup_interval_seconds > 0),
    backup_cron               text,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now(),

    -- Backup state -------------------------------------------------------------------
    next_due_at               timestamptz NOT NULL,
    last_attempt_at           timestamptz,
    last_success_at           timestamptz,
    last_status               text CHECK (last_status IN ('success', 'failed', 'skipped', 'locked')),
    last_error_kind           text,
    last_error_message        text,
    consecutive_failures      integer NOT NULL DEFAULT 0,
    backoff_until             timestamptz,
    blocked_reason            text CHECK (blocked_reason IN ('auth_failed', 'host_key_mismatch')),
    blocked_at                timestamptz,
    last_sha256               text,
    last_bytes                bigint,
    -- The scheduled job the enqueuer claimed for this device (at most one).
    outstanding_job           text,
    outstanding_since         timestamptz,
    -- The lease: which job execution may talk to the device and write its outcome.
    lease_job                 text,
    lease_token               uuid,
    lease_worker              text,
    lease_expires_at          timestamptz,
    -- Starts of lease_job that did not finish (a job that keeps crashing its worker).
    lease_starts              integer NOT NULL DEFAULT 0
);

CREATE UNIQUE INDEX devices_tenant_name ON devices (tenant_id, name);
-- What the enqueuer scans: due, schedulable, unclaimed devices, oldest first.
CREATE INDEX devices_due ON devices (next_due_at)
    WHERE enabled AND blocked_reason IS NULL AND outstanding_job IS NULL;
CREATE INDEX devices_outstanding ON devices (outstanding_since)
    WHERE outstanding_job IS NOT NULL;

CREATE TABLE backup_runs (
    id              bigserial PRIMARY KEY,
    device_id       uuid NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    tenant_id       uuid NOT NULL,
    job_id          text NOT NULL,
    trigger         text NOT NULL CHECK (trigger IN ('scheduled', 'manual')),
    worker          text NOT NULL,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL,
    status          text NOT NULL CHECK (status IN ('success', 'failed', 'skipped', 'locked')),
    error_kind      text,
    error_message   text,
    bytes           bigint,
    sha256          text,
    duration_ms     bigint NOT NULL
);

CREATE INDEX backup_runs_device ON backup_runs (device_id, id DESC);
CREATE INDEX backup_runs_job ON backup_runs (job_id);
CREATE INDEX backup_runs_finished ON backup_runs (finished_at);
