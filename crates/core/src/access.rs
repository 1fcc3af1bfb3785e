//! Who may see and do what: API tokens and browser sessions.
//!
//! A token is `rbk_<id>_<secret>`. The id half selects the row; only the SHA-256 of the
//! secret half is stored, and it is compared in constant time, so neither a database
//! leak nor response timing hands out a working token. Tokens carry a role (`viewer`
//! reads, `admin` acts) and optionally a tenant: a tenant-scoped token never sees another
//! tenant's devices, runs, jobs or counts — every query the web layer makes takes the
//! scope from the [`Principal`], never from the request.
//!
//! Browser sessions are opened by logging in with a token. The cookie value is random;
//! its SHA-256 is the session key, and each session has its own CSRF token that every
//! state-changing form and `fetch` must echo. Revoking a token ends its sessions.

use crate::store::{Store, StoreError};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read everything in scope.
    Viewer,
    /// Read, and act: back up, unblock, reset host keys, edit devices, retry jobs.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The authenticated caller of one request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Principal {
    /// `None` when the server runs with `--insecure-no-auth`.
    pub token_id: Option<Uuid>,
    pub name: String,
    pub role: Role,
    /// `Some`: this caller sees only this tenant.
    pub tenant_id: Option<Uuid>,
}

impl Principal {
    /// The caller the server assumes with `--insecure-no-auth`.
    pub fn unauthenticated_admin() -> Principal {
        Principal {
            token_id: None,
            name: "no-auth".into(),
            role: Role::Admin,
            tenant_id: None,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether a row of `tenant` is visible to this caller.
    pub fn sees(&self, tenant: Uuid) -> bool {
        self.tenant_id.is_none_or(|t| t == tenant)
    }
}

/// A stored token, without its secret.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct TokenInfo {
    pub id: Uuid,
    pub name: String,
    pub role: String,
    pub tenant_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A new browser session: the cookie value (shown to the browser once) and its CSRF token.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub cookie: String,
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
}

/// An open session, found from its cookie.
#[derive(Debug, Clone)]
pub struct Session {
    pub principal: Principal,
    pub csrf: String,
}

const PREFIX: &str = "rbk_";

fn random_b64(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

fn sha256(s: &str) -> Vec<u8> {
    Sha256::digest(s.as_bytes()).to_vec()
}

/// Split `rbk_<uuid-simple>_<secret>` into its halves; `None` for anything else.
fn split_token(token: &str) -> Option<(Uuid, &str)> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    if id.len() != 32 || secret.len() < 32 {
        return None;
    }
    Some((Uuid::try_parse(id).ok()?, secret))
}

/// Constant-time equality of two digests.
pub fn digest_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Token and session storage, on the fleet's database.
#[derive(Debug, Clone)]
pub struct Access {
    store: Store,
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: Uuid,
    name: String,
    role: String,
    tenant_id: Option<Uuid>,
    secret_sha256: Vec<u8>,
}

impl TokenRow {
    fn principal(self) -> Option<Principal> {
        Some(Principal {
            token_id: Some(self.id),
            name: self.name,
            role: Role::parse(&self.role)?,
            tenant_id: self.tenant_id,
        })
    }
}

impl Access {
    pub fn new(store: Store) -> Access {
        Access { store }
    }

    /// Create a token; the returned string is the only time its secret exists in clear.
    pub async fn create_token(
        &self,
        name: &str,
        role: Role,
        tenant_id: Option<Uuid>,
    ) -> Result<(TokenInfo, String), StoreError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 100 {
            return Err(StoreError::Invalid(
                "token name must be 1 to 100 characters".into(),
            ));
        }
        let id = Uuid::new_v4();
        let secret = random_b64(32);
        let token = format!("{PREFIX}{}_{secret}", id.simple());
        let info = sqlx::query_as::<_, TokenInfo>(
            "INSERT INTO api_tokens (id, name, role, tenant_id, secret_sha256) \
             VALUES ($1, $2, $3, $4, $5) \
             RETURNING id, name, role, tenant_id, created_at, last_used_at, revoked_at",
        )
        .bind(id)
        .bind(name)
        .bind(role.as_str())
        .bind(tenant_id)
        .bind(sha256(&secret))
        .fetch_one(self.store.pool())
        .await?;
        Ok((info, token))
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        Ok(sqlx::query_as::<_, TokenInfo>(
            "SELECT id, name, role, tenant_id, created_at, last_used_at, revoked_at \
             FROM api_tokens ORDER BY created_at, id",
        )
        .fetch_all(self.store.pool())
        .await?)
    }

    /// Revoke a token by id or by name (a name must be unambiguous among live tokens).
    /// Its sessions end with it. Returns the revoked token.
    pub async fn revoke_token(&self, id_or_name: &str) -> Result<TokenInfo, StoreError> {
        let live: Vec<TokenInfo> = sqlx::query_as::<_, TokenInfo>(
            "SELECT id, name, role, tenant_id, created_at, last_used_at, revoked_at \
             FROM api_tokens WHERE revoked_at IS NULL \
               AND (id::text = $1 OR name = $1)",
        )
        .bind(id_or_name.trim())
        .fetch_all(self.store.pool())
        .await?;
        let target = match live.as_slice() {
            [one] => one.id,
            [] => {
                return Err(StoreError::Invalid(format!(
                    "no live token with id or name {id_or_name:?}"
                )));
            }
            _ => {
                return Err(StoreError::Invalid(format!(
                    "{} live tokens are named {id_or_name:?}: revoke by id",
                    live.len()
                )));
            }
        };
        let mut tx = self.store.pool().begin().await?;
        let info = sqlx::query_as::<_, TokenInfo>(
            "UPDATE api_tokens SET revoked_at = now() WHERE id = $1 \
             RETURNING id, name, role, tenant_id, created_at, last_used_at, revoked_at",
        )
        .bind(target)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM web_sessions WHERE token_id = $1")
            .bind(target)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(info)
    }

    /// Live (unrevoked) tokens: the server refuses to run with auth and none.
    pub async fn live_tokens(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM api_tokens WHERE revoked_at IS NULL")
                .fetch_one(self.store.pool())
                .await?,
        )
    }

    /// The principal of a presented token, or `None` (malformed, unknown, revoked, wrong
    /// secret — deliberately indistinguishable to the caller).
    pub async fn authenticate(&self, token: &str) -> Result<Option<Principal>, StoreError> {
        let Some((id, secret)) = split_token(token.trim()) else {
            return Ok(None);
        };
        let row: Option<TokenRow> = sqlx::query_as(
            "SELECT id, name, role, tenant_id, secret_sha256 FROM api_tokens \
             WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .fetch_optional(self.store.pool())
        .await?;
        let presented = sha256(secret);
        let Some(row) = row else {
            // Same work as a hit, so an unknown id is not faster to reject.
            let _ = digest_eq(&presented, &[0u8; 32]);
            return Ok(None);
        };
        if !digest_eq(&presented, &row.secret_sha256) {
            return Ok(None);
        }
        // Coarse "last used" (once a minute at most): cheap, and useful to find stale tokens.
        sqlx::query(
            "UPDATE api_tokens SET last_used_at = now() WHERE id = $1 \
             AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
        )
        .bind(row.id)
        .execute(self.store.pool())
        .await?;
        Ok(row.principal())
    }

    /// Open a browser session for a token's principal.
    pub async fn open_session(
        &self,
        token_id: Uuid,
        ttl: chrono::Duration,
    ) -> Result<NewSession, StoreError> {
        let cookie = random_b64(32);
        let csrf = random_b64(24);
        let expires_at = Utc::now() + ttl;
        sqlx::query(
            "INSERT INTO web_sessions (id_sha256, token_id, csrf, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(sha256(&cookie))
        .bind(token_id)
        .bind(&csrf)
        .bind(expires_at)
        .execute(self.store.pool())
        .await?;
        // Expired sessions go on the way.
        sqlx::query("DELETE FROM web_sessions WHERE expires_at < now()")
            .execute(self.store.pool())
            .await?;
        Ok(NewSession {
            cookie,
            csrf,
            expires_at,
        })
    }

    /// The session behind a cookie value, if it is open and its token is live.
    pub async fn session(&self, cookie: &str) -> Result<Option<Session>, StoreError> {
        if cookie.is_empty() || cookie.len() > 100 {
            return Ok(None);
        }
        let row: Option<(String, Uuid, String, String, Option<Uuid>)> = sqlx::query_as(
            "SELECT s.csrf, t.id, t.name, t.role, t.tenant_id \
             FROM web_sessions s JOIN api_tokens t ON t.id = s.token_id \
             WHERE s.id_sha256 = $1 AND s.expires_at > now() AND t.revoked_at IS NULL",
        )
        .bind(sha256(cookie))
        .fetch_optional(self.store.pool())
        .await?;
        Ok(row.and_then(|(csrf, id, name, role, tenant_id)| {
            Some(Session {
                csrf,
                principal: Principal {
                    token_id: Some(id),
                    name,
                    role: Role::parse(&role)?,
                    tenant_id,
                },
            })
        }))
    }

    /// End a session (logout). Unknown cookies are fine.
    pub async fn close_session(&self, cookie: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM web_sessions WHERE id_sha256 = $1")
            .bind(sha256(cookie))
            .execute(self.store.pool())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shape_is_checked_before_the_database() {
        let id = Uuid::new_v4();
        let good = format!("rbk_{}_{}", id.simple(), "a".repeat(43));
        assert_eq!(split_token(&good).map(|(i, _)| i), Some(id));
        assert!(split_token("rbk_short_x").is_none());
        assert!(split_token(&format!("xyz_{}_{}", id.simple(), "a".repeat(43))).is_none());
        assert!(split_token(&format!("rbk_{}_{}", id.simple(), "a".repeat(5))).is_none());
        assert!(split_token(&format!("rbk_{}", id.simple())).is_none());
    }

    #[test]
    fn digests_compare_by_value_and_length() {
        assert!(digest_eq(b"abc", b"abc"));
        assert!(!digest_eq(b"abc", b"abd"));
        assert!(!digest_eq(b"abc", b"abcd"));
    }

    #[test]
    fn scope_limits_what_a_principal_sees() {
        let t = Uuid::new_v4();
        let mut p = Principal::unauthenticated_admin();
        assert!(p.sees(t));
        p.tenant_id = Some(t);
        assert!(p.sees(t));
        assert!(!p.sees(Uuid::new_v4()));
    }
}
