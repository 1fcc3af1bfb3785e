//! The sync's decisions, as pure functions over rows: which upstream rows to take, which
//! credential each device uses, what changed here, which pins move which way, what to
//! remove. The I/O around them (`upstream.rs`, `apply.rs`) only reads rows in and
//! writes a [`Plan`] out, so every rule is unit-tested here without a database.

use super::legacy::{self, Login, Unreadable};
use crate::credentials::CredentialKey;
use crate::secret::Secret;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// One row of the-other-dude's `devices` table with its credential profile's
/// ciphertexts (the columns the Go poller's device query reads that a backup needs,
/// plus `hostname` for our device name). Ciphertexts are not secrets, but `Debug` leaves
/// them out all the same.
#[derive(Clone, Default)]
pub struct UpstreamDevice {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub hostname: String,
    pub ip_address: String,
    /// `COALESCE(ssh_port, 22)`.
    pub ssh_port: i32,
    pub routeros_version: Option<String>,
    /// `COALESCE(device_type, 'routeros')`.
    pub device_type: String,
    pub ssh_host_key_fingerprint: Option<String>,
    pub encrypted_credentials: Option<Vec<u8>>,
    pub encrypted_credentials_transit: Option<String>,
    pub credential_profile_id: Option<Uuid>,
    pub profile_encrypted_credentials: Option<Vec<u8>>,
    pub profile_encrypted_credentials_transit: Option<String>,
}

impl std::fmt::Debug for UpstreamDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamDevice")
            .field("id", &self.id)
            .field("tenant_id", &self.tenant_id)
            .field("hostname", &self.hostname)
            .field("ip_address", &self.ip_address)
            .field("ssh_port", &self.ssh_port)
            .field("device_type", &self.device_type)
            .finish_non_exhaustive()
    }
}

impl UpstreamDevice {
    /// A device the Go poller would back up over SSH (`device_type` `routeros`).
    pub fn is_routeros(&self) -> bool {
        self.device_type == "routeros"
    }

    /// Does the row name any credential at all (the Go poller's query only returns
    /// these)?
    pub fn names_credentials(&self) -> bool {
        self.encrypted_credentials.is_some()
            || self.encrypted_credentials_transit.is_some()
            || self.credential_profile_id.is_some()
    }
}

/// Whose credentials a device uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Device,
    Profile,
}

impl Origin {
    fn columns(self) -> &'static str {
        match self {
            Origin::Device => "the device's credentials",
            Origin::Profile => "its credential profile's credentials",
        }
    }
}

/// The credential a device uses, chosen as the Go poller chooses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selected<'a> {
    /// An OpenBao Transit ciphertext (`vault:v…`): only OpenBao can open it.
    Transit(Origin),
    /// A legacy AES-256-GCM ciphertext.
    Legacy(Origin, &'a [u8]),
    None,
}

fn is_transit(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|t| t.starts_with("vault:v"))
}

/// The Go poller's precedence: the device's Transit ciphertext, the device's legacy
/// ciphertext, the profile's Transit ciphertext, the profile's legacy ciphertext. A
/// Transit column that does not start with `vault:v` counts as empty, as there. A
/// device whose chosen credential is Transit is not read from an older legacy column
/// behind it: that one may be stale.
pub fn select_credentials(d: &UpstreamDevice) -> Selected<'_> {
    fn legacy(v: &Option<Vec<u8>>) -> Option<&[u8]> {
        v.as_deref().filter(|b| !b.is_empty())
    }
    if is_transit(&d.encrypted_credentials_transit) {
        Selected::Transit(Origin::Device)
    } else if let Some(b) = legacy(&d.encrypted_credentials) {
        Selected::Legacy(Origin::Device, b)
    } else if is_transit(&d.profile_encrypted_credentials_transit) {
        Selected::Transit(Origin::Profile)
    } else if let Some(b) = legacy(&d.profile_encrypted_credentials) {
        Selected::Legacy(Origin::Profile, b)
    } else {
        Selected::None
    }
}

/// Why an upstream device is not synced this time. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    Transit(Origin),
    NoCredentials,
    Unreadable(Origin, Unreadable),
    BadHost(String),
    BadPort(i32),
    BadName,
    BadFingerprint,
    /// Another device here (not from this database) already has the name in the tenant.
    NameTaken(Uuid),
    /// The id belongs to a device of another tenant here.
    OtherTenant(Uuid),
}

impl SkipReason {
    /// The group a skip is counted under in the summary line.
    pub fn category(&self) -> &'static str {
        match self {
            SkipReason::Transit(_) => "transit credentials",
            SkipReason::NoCredentials => "no credentials",
            SkipReason::Unreadable(_, Unreadable::TooShort(_) | Unreadable::Decrypt)
            | SkipReason::Unreadable(_, Unreadable::NotJson) => "unreadable credentials",
            SkipReason::Unreadable(..) => "unusable credentials",
            SkipReason::BadHost(_)
            | SkipReason::BadPort(_)
            | SkipReason::BadName
            | SkipReason::BadFingerprint => "invalid fields",
            SkipReason::NameTaken(_) | SkipReason::OtherTenant(_) => "conflicts here",
        }
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::Transit(o) => write!(
                f,
                "{} are an OpenBao Transit ciphertext (vault:v…), which only OpenBao can decrypt; \
                 the device keeps what was synced before, if anything",
                o.columns()
            ),
            SkipReason::NoCredentials => f.write_str(
                "no credentials (neither the device nor its credential profile has any)",
            ),
            SkipReason::Unreadable(o, why) => {
                let what = match o {
                    Origin::Device => "the device's encrypted_credentials",
                    Origin::Profile => "its credential profile's encrypted_credentials",
                };
                write!(f, "{what} {why}")
            }
            SkipReason::BadHost(why) => write!(f, "ip_address: {why}"),
            SkipReason::BadPort(p) => write!(f, "ssh_port {p} is not a port (1-65535)"),
            SkipReason::BadName => {
                f.write_str("hostname is empty or has control characters (it is the device name)")
            }
            SkipReason::BadFingerprint => f.write_str(
                "ssh_host_key_fingerprint is not in `SHA256:<43 base64 characters>` form",
            ),
            SkipReason::NameTaken(other) => write!(
                f,
                "its hostname is the name of device {other} here, which did not come from this \
                 database (rename one of them)"
            ),
            SkipReason::OtherTenant(_) => {
                f.write_str("a device with this id exists here in another tenant")
            }
        }
    }
}

/// A device that was not synced, with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub reason: SkipReason,
}

/// An upstream device as it should be here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub host: String,
    pub ssh_port: u16,
    pub username: String,
    pub password: Secret,
    pub routeros_version: Option<String>,
    /// The upstream pin (`None` when NULL or empty).
    pub host_key: Option<String>,
}

/// What the upstream rows say, before looking at our store.
#[derive(Debug, Default)]
pub struct Triage {
    pub candidates: Vec<Candidate>,
    pub skipped: Vec<Skipped>,
    /// RouterOS rows that name no credential at all: not taken, and listed as skipped
    /// only when the device was synced before (then it keeps its old credentials).
    pub without_credentials: Vec<Skipped>,
    /// Every RouterOS device upstream, taken or not: a synced device is removed here
    /// only when its id is not in this set.
    pub routeros_ids: HashSet<Uuid>,
}

/// No legacy ciphertext opened under the key although some were well-formed: the key is
/// not the backend's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrongKey {
    pub failed: usize,
}

/// A RouterOS version the worker can use as a hint: the first word of what the backend
/// stored (`7.16.2 (stable)` → `7.16.2`), when it reads as a version; else unknown.
pub fn version_hint(v: Option<&str>) -> Option<String> {
    let first = v?.split_whitespace().next()?;
    crate::inventory::parse_routeros_version(first)
        .ok()
        .flatten()
}

/// The upstream pin: `None` for NULL or blank; an error when it is not a fingerprint.
pub fn upstream_pin(v: Option<&str>) -> Result<Option<String>, SkipReason> {
    match v.map(str::trim) {
        None | Some("") => Ok(None),
        Some(fp) if crate::device::is_fingerprint(fp) => Ok(Some(fp.to_string())),
        Some(_) => Err(SkipReason::BadFingerprint),
    }
}

/// Sort the upstream rows into candidates and skips, opening legacy credentials with
/// `key`. Fails as a whole, before anything is written, when no well-formed legacy
/// ciphertext opens although at least one was tried (the wrong key); one that does not
/// open among others that do is that device's problem only.
pub fn triage(rows: &[UpstreamDevice], key: &CredentialKey) -> Result<Triage, WrongKey> {
    let mut t = Triage::default();
    let (mut opened, mut failed) = (0usize, 0usize);
    let mut decided: Vec<(&UpstreamDevice, Result<Login, SkipReason>)> = Vec::new();
    for d in rows.iter().filter(|d| d.is_routeros()) {
        t.routeros_ids.insert(d.id);
        if !d.names_credentials() {
            t.without_credentials
                .push(skipped(d, SkipReason::NoCredentials));
            continue;
        }
        let login = match select_credentials(d) {
            Selected::None => Err(SkipReason::NoCredentials),
            Selected::Transit(o) => Err(SkipReason::Transit(o)),
            Selected::Legacy(o, sealed) => {
                let r = legacy::open(key, sealed);
                match &r {
                    Err(Unreadable::Decrypt) => failed += 1,
                    Err(Unreadable::TooShort(_)) => {}
                    _ => opened += 1,
                }
                r.map_err(|e| SkipReason::Unreadable(o, e))
            }
        };
        decided.push((d, login));
    }
    if failed > 0 && opened == 0 {
        return Err(WrongKey { failed });
    }
    for (d, login) in decided {
        match login.and_then(|l| candidate(d, l)) {
            Ok(c) => t.candidates.push(c),
            Err(reason) => t.skipped.push(skipped(d, reason)),
        }
    }
    Ok(t)
}

fn skipped(d: &UpstreamDevice, reason: SkipReason) -> Skipped {
    Skipped {
        id: d.id,
        tenant_id: d.tenant_id,
        name: d.hostname.chars().filter(|c| !c.is_control()).collect(),
        reason,
    }
}

/// Check an upstream row's fields the way an inventory row is checked.
fn candidate(d: &UpstreamDevice, login: Login) -> Result<Candidate, SkipReason> {
    let name = crate::inventory::parse_name(&d.hostname).map_err(|_| SkipReason::BadName)?;
    let host = crate::inventory::parse_host(d.ip_address.trim()).map_err(SkipReason::BadHost)?;
    let ssh_port = u16::try_from(d.ssh_port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or(SkipReason::BadPort(d.ssh_port))?;
    Ok(Candidate {
        id: d.id,
        tenant_id: d.tenant_id,
        name,
        host,
        ssh_port,
        username: login.username,
        password: login.password,
        routeros_version: version_hint(d.routeros_version.as_deref()),
        host_key: upstream_pin(d.ssh_host_key_fingerprint.as_deref())?,
    })
}

/// A device here that the sync may touch: a synced one, or one whose id or name an
/// upstream device has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ours {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub host: String,
    pub ssh_port: i32,
    pub username: String,
    /// Our stored password, opened (`None` when it does not open: it is replaced).
    pub password: Option<Secret>,
    pub routeros_version: Option<String>,
    pub fingerprint: Option<String>,
    /// Did it come from the-other-dude (a `tod_devices` row)?
    pub synced: bool,
    /// The upstream pin as the last sync saw (or wrote) it.
    pub upstream_host_key: Option<String>,
}

/// Where the host key pin goes for one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinPlan {
    /// Our pin after the sync.
    pub ours: Option<String>,
    /// Did our pin change (then a `host_key_mismatch` block is lifted: the key to check
    /// against is a new one)?
    pub changed: bool,
    /// Write this pin to the upstream column (only where it is NULL, empty or equal).
    pub write_back: Option<String>,
    /// The upstream pin to remember as seen.
    pub seen_upstream: Option<String>,
}

/// The host key rule, one pin shared by both systems:
///
/// - an upstream pin is ours (a pin changes upstream only by an operator's reset there
///   and the Go poller's trust on first use after it, as ours would);
/// - an upstream pin that was there at the last sync and is gone now was reset by an
///   operator: ours is forgotten too, and the next backup pins what it sees;
/// - no upstream pin, none before: ours (learned on first use) is written back.
pub fn pin_plan(upstream: Option<&str>, seen_before: Option<&str>, ours: Option<&str>) -> PinPlan {
    match (upstream, seen_before) {
        (Some(u), _) => PinPlan {
            ours: Some(u.to_string()),
            changed: ours != Some(u),
            write_back: None,
            seen_upstream: Some(u.to_string()),
        },
        (None, Some(_)) => PinPlan {
            ours: None,
            changed: ours.is_some(),
            write_back: None,
            seen_upstream: None,
        },
        (None, None) => PinPlan {
            ours: ours.map(str::to_string),
            changed: false,
            write_back: ours.map(str::to_string),
            seen_upstream: None,
        },
    }
}

/// A device to write here: inserted, or updated to these values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub device: Candidate,
    /// Our pin after the sync.
    pub fingerprint: Option<String>,
    /// The password differs from ours (re-seal it; lifts an `auth_failed` block, as do
    /// a changed user name).
    pub password_changed: bool,
    pub credentials_changed: bool,
    /// Our pin changed (lifts a `host_key_mismatch` block).
    pub pin_changed: bool,
    /// The upstream pin to remember as seen.
    pub seen_upstream: Option<String>,
}

/// Everything one sync does here and upstream.
#[derive(Debug, Default)]
pub struct Plan {
    pub inserts: Vec<Write>,
    pub updates: Vec<Write>,
    /// Existing devices that become synced (adopted: same id, not synced before).
    pub adopt: Vec<(Uuid, Option<String>)>,
    /// Synced devices whose remembered upstream pin changes, nothing else.
    pub seen: Vec<(Uuid, Option<String>)>,
    pub unchanged: usize,
    pub removals: Vec<Uuid>,
    /// Pins to write to the upstream column.
    pub write_back: Vec<(Uuid, String)>,
    pub skipped: Vec<Skipped>,
    /// Things the operator should know (e.g. removals held back).
    pub notes: Vec<String>,
}

/// Compare what upstream says with what we have and decide every write. `holders` are
/// devices here (not necessarily in `ours`) that hold a name some candidate wants:
/// `(id, tenant, name)`.
pub fn plan(triage: Triage, ours: &[Ours], holders: &[(Uuid, Uuid, String)]) -> Plan {
    let mut p = Plan {
        skipped: triage.skipped,
        ..Plan::default()
    };
    let by_id: HashMap<Uuid, &Ours> = ours.iter().map(|o| (o.id, o)).collect();
    for s in triage.without_credentials {
        if by_id.get(&s.id).is_some_and(|o| o.synced) {
            p.skipped.push(s);
        }
    }

    // Removals: synced here, no RouterOS row upstream any more.
    let synced: Vec<Uuid> = ours.iter().filter(|o| o.synced).map(|o| o.id).collect();
    let gone: Vec<Uuid> = synced
        .iter()
        .copied()
        .filter(|id| !triage.routeros_ids.contains(id))
        .collect();
    if triage.routeros_ids.is_empty() && !gone.is_empty() {
        p.notes.push(format!(
            "the-other-dude's database lists no RouterOS device at all; the {} devices synced \
             from it are kept (is it the right database?). Remove them with `rosbackup devices \
             remove` if this is intended",
            gone.len()
        ));
    } else {
        p.removals = gone;
    }
    let removed: HashSet<Uuid> = p.removals.iter().copied().collect();

    // Tenancy first: an id of another tenant here is never taken over.
    let mut candidates = Vec::new();
    for c in triage.candidates {
        match by_id.get(&c.id) {
            Some(o) if o.tenant_id != c.tenant_id => p.skipped.push(Skipped {
                id: c.id,
                tenant_id: c.tenant_id,
                name: c.name.clone(),
                reason: SkipReason::OtherTenant(o.tenant_id),
            }),
            _ => candidates.push(c),
        }
    }

    // Names: a candidate may not take a name another device keeps. Skipping one
    // candidate keeps its old name in place, which may block another: repeat until
    // nothing changes.
    let mut current: HashMap<Uuid, (Uuid, String)> = holders
        .iter()
        .map(|(id, t, n)| (*id, (*t, n.clone())))
        .collect();
    for o in ours {
        current.insert(o.id, (o.tenant_id, o.name.clone()));
    }
    let mut blocked: HashMap<Uuid, Uuid> = HashMap::new();
    loop {
        let mut final_names: HashMap<(Uuid, &str), Vec<Uuid>> = HashMap::new();
        let taken: HashSet<Uuid> = candidates
            .iter()
            .filter(|c| !blocked.contains_key(&c.id))
            .map(|c| c.id)
            .collect();
        for c in candidates.iter().filter(|c| taken.contains(&c.id)) {
            final_names
                .entry((c.tenant_id, c.name.as_str()))
                .or_default()
                .push(c.id);
        }
        for (id, (t, n)) in &current {
            if !taken.contains(id) && !removed.contains(id) {
                final_names.entry((*t, n.as_str())).or_default().push(*id);
            }
        }
        let mut more = false;
        for c in candidates.iter().filter(|c| taken.contains(&c.id)) {
            let owners = &final_names[&(c.tenant_id, c.name.as_str())];
            if let Some(other) = owners.iter().find(|o| **o != c.id) {
                blocked.insert(c.id, *other);
                more = true;
            }
        }
        if !more {
            break;
        }
    }

    for c in candidates {
        if let Some(other) = blocked.get(&c.id) {
            p.skipped.push(Skipped {
                id: c.id,
                tenant_id: c.tenant_id,
                name: c.name.clone(),
                reason: SkipReason::NameTaken(*other),
            });
            continue;
        }
        let Some(o) = by_id.get(&c.id) else {
            // New here: the upstream pin, if any, is ours from the start.
            p.inserts.push(Write {
                fingerprint: c.host_key.clone(),
                password_changed: true,
                credentials_changed: true,
                pin_changed: false,
                seen_upstream: c.host_key.clone(),
                device: c,
            });
            continue;
        };
        let seen_before = if o.synced {
            o.upstream_host_key.as_deref()
        } else {
            None
        };
        let pins = pin_plan(c.host_key.as_deref(), seen_before, o.fingerprint.as_deref());
        if let Some(fp) = &pins.write_back {
            p.write_back.push((c.id, fp.clone()));
        }
        let password_changed = o.password.as_ref() != Some(&c.password);
        let credentials_changed = password_changed || o.username != c.username;
        // Our worker learns the version from the device itself: the backend's only fills
        // in what we do not know.
        let version = o.routeros_version.clone().or(c.routeros_version.clone());
        let changed = credentials_changed
            || pins.changed
            || o.name != c.name
            || o.host != c.host
            || o.ssh_port != i32::from(c.ssh_port)
            || version != o.routeros_version;
        if !o.synced {
            p.adopt.push((c.id, pins.seen_upstream.clone()));
        } else if !changed && o.upstream_host_key != pins.seen_upstream {
            p.seen.push((c.id, pins.seen_upstream.clone()));
        }
        if changed {
            p.updates.push(Write {
                fingerprint: pins.ours,
                password_changed,
                credentials_changed,
                pin_changed: pins.changed,
                seen_upstream: pins.seen_upstream,
                device: Candidate {
                    routeros_version: version,
                    ..c
                },
            });
        } else {
            p.unchanged += 1;
        }
    }
    p
}

/// What a sync did, for the operator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub inserted: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub removed: usize,
    pub skipped: Vec<Skipped>,
    /// Pins written to the upstream column.
    pub written_back: usize,
    pub notes: Vec<String>,
}

impl SyncReport {
    /// Devices in sync after this run (new, updated and unchanged).
    pub fn synced(&self) -> usize {
        self.inserted + self.updated + self.unchanged
    }

    /// `synced 1,204 devices: 3 new, 2 updated, 1 removed, 4 skipped (transit credentials)`.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "synced {} devices: {} new, {} updated, {} removed, {} skipped",
            thousands(self.synced()),
            thousands(self.inserted),
            thousands(self.updated),
            thousands(self.removed),
            thousands(self.skipped.len())
        );
        let mut by: Vec<(&str, usize)> = Vec::new();
        for s in &self.skipped {
            let cat = s.reason.category();
            match by.iter_mut().find(|(c, _)| *c == cat) {
                Some((_, n)) => *n += 1,
                None => by.push((cat, 1)),
            }
        }
        match by.as_slice() {
            [] => {}
            [(cat, _)] => line.push_str(&format!(" ({cat})")),
            many => {
                let parts: Vec<String> = many
                    .iter()
                    .map(|(c, n)| format!("{} {c}", thousands(*n)))
                    .collect();
                line.push_str(&format!(" ({})", parts.join(", ")));
            }
        }
        if self.written_back > 0 {
            line.push_str(&format!(
                "; {} host keys written back",
                thousands(self.written_back)
            ));
        }
        line
    }
}

/// `1204` → `1,204`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests;
