-- Per-device and per-credential-profile export timeouts, and what the run history needs
-- for the adaptive default (issue #18, "Big configs on slow routers").
--
-- An override is whole seconds, 1 to 3600 (`export_timeout::MAX_OVERRIDE_SECONDS`); NULL
-- follows the next level (device → profile → adaptive default → fleet).
ALTER TABLE devices ADD COLUMN export_timeout_seconds integer
    CHECK (export_timeout_seconds BETWEEN 1 AND 3600);
ALTER TABLE credential_profiles ADD COLUMN export_timeout_seconds integer
    CHECK (export_timeout_seconds BETWEEN 1 AND 3600);

-- Each run records the export timeout that applied and where it came from (NULL for runs
-- that never reached a device, and for runs older than this migration); `export_ms` how
-- long a successful export took (connect, login, export, normalize: not the publish or a
-- binary step, which `duration_ms` includes); `timed_out` whether the export timeout
-- expired (before or after output had started: `timeout` or `truncated_output`).
ALTER TABLE backup_runs ADD COLUMN timeout_seconds integer;
ALTER TABLE backup_runs ADD COLUMN timeout_source text
    CHECK (timeout_source IN ('device', 'profile', 'adaptive', 'fleet'));
ALTER TABLE backup_runs ADD COLUMN export_ms bigint;
ALTER TABLE backup_runs ADD COLUMN timed_out boolean NOT NULL DEFAULT false;
