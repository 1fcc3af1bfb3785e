-- SSH user keys and credential profiles (issue #18).
--
-- A device may log in with a user key (Ed25519 or RSA) before, or instead of, its
-- password. The key is stored unencrypted only inside the AES-256-GCM seal of
-- CREDENTIAL_ENCRYPTION_KEY (12-byte nonce || ciphertext || tag; associated data = the
-- owner's id followed by "/ssh-key", so a sealed key never passes for a password). A
-- key-only device keeps an empty password, sealed like any other, so the key check value
-- logic of 0005 (which opens device passwords) is unchanged.
ALTER TABLE devices ADD COLUMN ssh_key_enc bytea;

-- Named credentials shared by many devices of a tenant: username + password and/or key,
-- sealed like a device's (associated data = the profile's id). A device uses its own
-- credentials when it has any (a password or a key), else its profile's.
CREATE TABLE credential_profiles (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL,
    name          text NOT NULL,
    username      text NOT NULL,
    password_enc  bytea,
    ssh_key_enc   bytea,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (password_enc IS NOT NULL OR ssh_key_enc IS NOT NULL),
    UNIQUE (id, tenant_id)
);
CREATE UNIQUE INDEX credential_profiles_tenant_name ON credential_profiles (tenant_id, name);

-- A device's profile is of its own tenant (the composite key), and a profile in use
-- cannot be deleted (RESTRICT; the CLI and the API say how many devices use it first).
ALTER TABLE devices ADD COLUMN credential_profile_id uuid;
ALTER TABLE devices ADD CONSTRAINT devices_credential_profile_fk
    FOREIGN KEY (credential_profile_id, tenant_id)
    REFERENCES credential_profiles (id, tenant_id) ON DELETE RESTRICT;
CREATE INDEX devices_credential_profile ON devices (credential_profile_id)
    WHERE credential_profile_id IS NOT NULL;
