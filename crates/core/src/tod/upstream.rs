//! the-other-dude's database: read its devices, write back host key pins, nothing else.
//!
//! The backend gives its Go poller a role that may read `devices` and
//! `credential_profiles` and update only the host key columns; the sync needs no more
//! than that. It reads every device with its credential profile's ciphertexts in one
//! query (the columns the Go poller reads, cast to text where a deployment's column
//! type may differ) and writes exactly one column, `ssh_host_key_fingerprint`, under
//! the Go poller's own condition: only where it is NULL, empty or already equal.

use super::plan::UpstreamDevice;
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use std::time::Duration;
use uuid::Uuid;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the-other-dude's database could not be read or written. No URL, no secret.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no answer within {} s", CONNECT_TIMEOUT.as_secs())]
    Timeout,
    #[error("{}", describe(.0))]
    Db(#[from] sqlx::Error),
}

/// PostgreSQL's own message for a server error (without sqlx's decoration), sqlx's
/// otherwise; both name no password.
fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => d.message().to_string(),
        other => other.to_string(),
    }
}

/// Connect (one connection: a sync is a handful of statements).
pub async fn connect(url: &str) -> Result<PgConnection, UpstreamError> {
    tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(url))
        .await
        .map_err(|_| UpstreamError::Timeout)?
        .map_err(UpstreamError::Db)
}

const FETCH: &str = "\
    SELECT d.id, d.tenant_id, d.hostname::text AS hostname, d.ip_address::text AS ip_address, \
           COALESCE(d.ssh_port, 22)::int4 AS ssh_port, d.routeros_version::text AS routeros_version, \
           COALESCE(d.device_type::text, 'routeros') AS device_type, \
           d.ssh_host_key_fingerprint::text AS ssh_host_key_fingerprint, \
           d.encrypted_credentials, d.encrypted_credentials_transit::text AS encrypted_credentials_transit, \
           d.credential_profile_id, \
           cp.encrypted_credentials AS profile_encrypted_credentials, \
           cp.encrypted_credentials_transit::text AS profile_encrypted_credentials_transit \
    FROM devices d \
    LEFT JOIN credential_profiles cp ON cp.id = d.credential_profile_id \
    ORDER BY d.tenant_id, d.id";

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    tenant_id: Uuid,
    hostname: Option<String>,
    ip_address: Option<String>,
    ssh_port: i32,
    routeros_version: Option<String>,
    device_type: String,
    ssh_host_key_fingerprint: Option<String>,
    encrypted_credentials: Option<Vec<u8>>,
    encrypted_credentials_transit: Option<String>,
    credential_profile_id: Option<Uuid>,
    profile_encrypted_credentials: Option<Vec<u8>>,
    profile_encrypted_credentials_transit: Option<String>,
}

/// Every device upstream, with its credential profile's ciphertexts.
pub async fn fetch(conn: &mut PgConnection) -> Result<Vec<UpstreamDevice>, UpstreamError> {
    let rows: Vec<Row> = sqlx::query_as(FETCH).fetch_all(&mut *conn).await?;
    Ok(rows
        .into_iter()
        .map(|r| UpstreamDevice {
            id: r.id,
            tenant_id: r.tenant_id,
            hostname: r.hostname.unwrap_or_default(),
            ip_address: r.ip_address.unwrap_or_default(),
            ssh_port: r.ssh_port,
            routeros_version: r.routeros_version,
            device_type: r.device_type,
            ssh_host_key_fingerprint: r.ssh_host_key_fingerprint,
            encrypted_credentials: r.encrypted_credentials,
            encrypted_credentials_transit: r.encrypted_credentials_transit,
            credential_profile_id: r.credential_profile_id,
            profile_encrypted_credentials: r.profile_encrypted_credentials,
            profile_encrypted_credentials_transit: r.profile_encrypted_credentials_transit,
        })
        .collect())
}

/// Write our pins where the upstream column is NULL, empty or equal (the Go poller's
/// rule: a pin is never replaced). Returns the devices whose column now holds ours.
pub async fn write_back(
    conn: &mut PgConnection,
    pins: &[(Uuid, String)],
) -> Result<Vec<(Uuid, String)>, UpstreamError> {
    if pins.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = pins.iter().map(|(id, _)| *id).collect();
    let fps: Vec<String> = pins.iter().map(|(_, fp)| fp.clone()).collect();
    let written: Vec<(Uuid, String)> = sqlx::query_as(
        "UPDATE devices d SET ssh_host_key_fingerprint = v.fp \
         FROM unnest($1::uuid[], $2::text[]) AS v(id, fp) \
         WHERE d.id = v.id AND (d.ssh_host_key_fingerprint IS NULL \
           OR d.ssh_host_key_fingerprint = '' OR d.ssh_host_key_fingerprint = v.fp) \
         RETURNING d.id, v.fp",
    )
    .bind(&ids)
    .bind(&fps)
    .fetch_all(&mut *conn)
    .await?;
    Ok(written)
}
