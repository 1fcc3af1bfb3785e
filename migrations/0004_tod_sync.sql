-- Devices synced from a the-other-dude database (`rosbackup devices sync --from-tod`,
-- ROSBACKUP_TOD_DATABASE_URL): which devices the sync owns (only these are removed when
-- they disappear upstream), and the upstream host key pin as the last sync saw it (a pin
-- that was there and is gone was reset by an operator upstream; one that never was is
-- where ours is written back).

CREATE TABLE tod_devices (
    device_id          uuid PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    upstream_host_key  text,
    first_synced_at    timestamptz NOT NULL DEFAULT now()
);
