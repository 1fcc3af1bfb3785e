//! The operations both faces call: the JSON API (`api`) and the dashboard (`pages`,
//! `history`) do nothing to devices, jobs or the queue except through these.
//!
//! Two checks live here once: [`device`] is the tenant check (a device outside the
//! caller's tenant is the same 404 as one that does not exist), and [`require_admin`]
//! the role check; every operation that acts calls it first. Manual backups go through
//! [`rosbackup_core::manual::request`], the same function the CLI and the NATS trigger
//! use (it counts `jobs_enqueued{trigger="manual"}`).
//!
//! Imports `auth`, `error` and `state`; must not import a face (`api`, `pages`,
//! `history`). The types operations take and return are in [`types`]; the operations are
//! one file per concern — `devices`, `jump` (bastions), `profiles`, `backups` (manual),
//! `stats`, `jobs` — each taking the two checks and the imports below through
//! `use super::*`, and re-exported here so a face calls `ops::create_device` whatever file
//! holds it.

mod backups;
mod devices;
mod jobs;
mod jump;
mod profiles;
mod stats;
pub mod types;

pub use backups::*;
pub use devices::*;
pub use jobs::*;
pub use jump::*;
pub use profiles::*;
pub use stats::*;
pub use types::*;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::{AuthMode, WebState};
use axum::http::StatusCode;
use chrono::Utc;
use rosbackup_core::credentials::CredentialKey;
use rosbackup_core::inventory;
use rosbackup_core::manual::Requested;
use rosbackup_core::queue::{JobInfo, JobListState};
use rosbackup_core::report::{ActivityBucket, AgeBucket, DeviceRow, RecentRun, TenantCount};
use rosbackup_core::store::{KeyChange, NewDevice, Run, StoreError};
use rosbackup_core::userkey::UserKey;
use std::time::Duration;
use uuid::Uuid;

// ---- the two checks ----------------------------------------------------------------

/// Acting (anything but reading) needs an admin.
pub fn require_admin(c: &Caller) -> ApiResult<()> {
    if c.principal.is_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden())
    }
}

/// The device if the caller may see it: the tenant check.
pub async fn device(s: &WebState, c: &Caller, id: Uuid) -> ApiResult<DeviceRow> {
    s.report()
        .device(id, c.tenant())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no device {id}")))
}

// ---- who ---------------------------------------------------------------------------

pub fn whoami(s: &WebState, c: &Caller) -> Whoami {
    Whoami {
        name: c.principal.name.clone(),
        role: c.principal.role.as_str().into(),
        tenant_id: c.principal.tenant_id,
        auth: match s.settings().auth {
            AuthMode::Required => "required".into(),
            AuthMode::Disabled => "disabled".into(),
        },
    }
}
