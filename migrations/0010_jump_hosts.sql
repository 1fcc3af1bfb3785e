-- Stored jump hosts (bastions) for the fleet (issue #18).
--
-- A device, a credential profile or a tenant (its default) may name a jump host:
-- host, port, and optionally a user, a password and a user key for the bastion itself.
-- Without a user the device's user logs in to the bastion, without a key the device's
-- key is tried there, as OpenSSH's ProxyJump does. Secrets are sealed like a device's
-- (AES-256-GCM under CREDENTIAL_ENCRYPTION_KEY, 12-byte nonce || ciphertext || tag),
-- with associated data = the owner's id (device, profile or tenant) followed by
-- "/jump-password" or "/jump-key", so a jump secret never passes for another.
--
-- Resolution (crate::jump::resolve): the device's own jump host, else (unless the device
-- says `jump_direct`) its credential profile's, else its tenant's default.
ALTER TABLE devices
    ADD COLUMN jump_host text,
    ADD COLUMN jump_port integer CHECK (jump_port BETWEEN 1 AND 65535),
    ADD COLUMN jump_username text,
    ADD COLUMN jump_password_enc bytea,
    ADD COLUMN jump_key_enc bytea,
    -- Connect directly even when the profile or the tenant names a jump host.
    ADD COLUMN jump_direct boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT devices_jump_port CHECK ((jump_host IS NULL) = (jump_port IS NULL)),
    ADD CONSTRAINT devices_jump_or_direct CHECK (NOT (jump_direct AND jump_host IS NOT NULL));

ALTER TABLE credential_profiles
    ADD COLUMN jump_host text,
    ADD COLUMN jump_port integer CHECK (jump_port BETWEEN 1 AND 65535),
    ADD COLUMN jump_username text,
    ADD COLUMN jump_password_enc bytea,
    ADD COLUMN jump_key_enc bytea,
    ADD CONSTRAINT credential_profiles_jump_port CHECK ((jump_host IS NULL) = (jump_port IS NULL));

CREATE TABLE tenant_jump_hosts (
    tenant_id     uuid PRIMARY KEY,
    host          text NOT NULL,
    port          integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    username      text,
    password_enc  bytea,
    key_enc       bytea,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- A bastion's host key, pinned on first use once per bastion (tenant, host, port), not
-- per device. A bastion presenting another key blocks the devices behind it
-- (`bastion_host_key_mismatch`); the key it presented is kept here for the operator to
-- compare before `rosbackup bastions reset-host-key` (or the API) forgets the pin and
-- lifts those blocks.
CREATE TABLE bastion_host_keys (
    tenant_id              uuid NOT NULL,
    host                   text NOT NULL,
    port                   integer NOT NULL,
    fingerprint            text NOT NULL,
    pinned_at              timestamptz NOT NULL DEFAULT now(),
    presented_fingerprint  text,
    mismatch_at            timestamptz,
    PRIMARY KEY (tenant_id, host, port)
);

-- A changed bastion key blocks the devices behind it like their own changed key.
ALTER TABLE devices DROP CONSTRAINT devices_blocked_reason_check;
ALTER TABLE devices ADD CONSTRAINT devices_blocked_reason_check
    CHECK (blocked_reason IN ('auth_failed', 'host_key_mismatch', 'credentials_unreadable',
                              'bastion_host_key_mismatch'));
