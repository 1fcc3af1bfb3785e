-- Who may use the dashboard and the API: tokens (stored as SHA-256 of their secret half)
-- with a role and an optional tenant scope, and browser sessions opened with a token.

CREATE TABLE api_tokens (
    id            uuid PRIMARY KEY,
    name          text NOT NULL,
    role          text NOT NULL CHECK (role IN ('viewer', 'admin')),
    -- NULL: every tenant. Otherwise the token sees and acts on this tenant only.
    tenant_id     uuid,
    secret_sha256 bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);

CREATE TABLE web_sessions (
    -- SHA-256 of the cookie value: a database leak does not hand out sessions.
    id_sha256   bytea PRIMARY KEY,
    token_id    uuid NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    csrf        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);

CREATE INDEX web_sessions_expiry ON web_sessions (expires_at);

-- Dashboard queries: recent activity, device search.
CREATE INDEX backup_runs_tenant_finished ON backup_runs (tenant_id, finished_at);
CREATE INDEX devices_name ON devices (name, id);
