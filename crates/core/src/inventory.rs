//! Device inventories as CSV: what `rosbackup devices import` reads.
//!
//! The format is the simulator's inventory (`rosbackup sim --inventory`): a header row
//! `id,tenant_id,name,host,port,username,password,routeros_version`, then one device per
//! row. Optional columns may be added: `enabled` (true/false), `backup_interval_seconds`,
//! `backup_cron`, `ssh_key_file` (a private key file, relative to the CSV's directory,
//! read by the command that imports), `credential_profile` (the name of a credential
//! profile of the row's tenant), `tenant` (a tenant's name), `export_timeout_seconds`
//! (the device's export timeout, 1 to 3600 s; `auto` removes one, empty keeps what the
//! device has: see `export_timeout`) and `jump_host`
//! (`[user@]host[:port]` of a bastion reached with the device's credentials, `direct`, or
//! empty for none of its own; see [`crate::jump`]). A row with a key file or a
//! profile may leave `password` empty; a row with a profile may leave `username` empty too
//! (the profile's is used). An inventory without the `ssh_key_file` or `credential_profile`
//! column keeps an existing device's key or profile (set another way); the column with an
//! empty value removes it. Columns may come in any order; header names are matched
//! exactly. An empty `tenant_id` means the tenant named in `tenant` (its derived id, see
//! `tenant::id_for_name`) or the default tenant; an empty `id` is derived from the tenant
//! and the device name (`tenant::device_id_for`), so a hand-written inventory needs no
//! UUIDs and imports the same way every time.
//!
//! Parsing is all-or-nothing: the first bad row stops it with an [`InventoryError`]
//! naming the physical line (the header is line 1) and the column, so an operator can
//! fix the file and import again. Errors never carry a password: for the password column
//! they only say that it is empty (or not UTF-8).
//!
//! The field validators are public and shared with `rosbackup devices add`
//! ([`DeviceFields::validate`]), so a device is accepted on the same terms however it is
//! entered.

use crate::schedule::parse_cron;
use crate::secret::Secret;
use crate::store::NewDevice;
use crate::tenant;
use std::collections::HashMap;
use std::net::IpAddr;
use uuid::Uuid;

/// Column names.
pub const ID: &str = "id";
pub const TENANT_ID: &str = "tenant_id";
pub const NAME: &str = "name";
pub const HOST: &str = "host";
pub const PORT: &str = "port";
pub const USERNAME: &str = "username";
pub const PASSWORD: &str = "password";
pub const ROUTEROS_VERSION: &str = "routeros_version";
pub const ENABLED: &str = "enabled";
pub const BACKUP_INTERVAL_SECONDS: &str = "backup_interval_seconds";
pub const BACKUP_CRON: &str = "backup_cron";
pub const SSH_KEY_FILE: &str = "ssh_key_file";
pub const CREDENTIAL_PROFILE: &str = "credential_profile";
pub const TENANT: &str = "tenant";
pub const EXPORT_TIMEOUT_SECONDS: &str = "export_timeout_seconds";
pub const JUMP_HOST: &str = "jump_host";

/// Columns every inventory has (the simulator's header, in its order).
pub const REQUIRED_COLUMNS: [&str; 8] = [
    ID,
    TENANT_ID,
    NAME,
    HOST,
    PORT,
    USERNAME,
    PASSWORD,
    ROUTEROS_VERSION,
];

/// Columns an inventory may add.
pub const OPTIONAL_COLUMNS: [&str; 8] = [
    ENABLED,
    BACKUP_INTERVAL_SECONDS,
    BACKUP_CRON,
    SSH_KEY_FILE,
    CREDENTIAL_PROFILE,
    TENANT,
    EXPORT_TIMEOUT_SECONDS,
    JUMP_HOST,
];

/// Why an inventory was refused: where, and what is wrong. Never carries a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}{}: {reason}", column.as_ref().map(|c| format!(", column {c}")).unwrap_or_default())]
pub struct InventoryError {
    /// 1-based physical line in the file (the header is line 1); for a row spanning
    /// several lines (a quoted newline), the line it starts on.
    pub line: u64,
    /// The column the bad value is in, when the error is about one value.
    pub column: Option<String>,
    pub reason: String,
}

impl InventoryError {
    fn new(line: u64, column: Option<&str>, reason: impl Into<String>) -> Self {
        InventoryError {
            line,
            column: column.map(str::to_string),
            reason: reason.into(),
        }
    }
}

/// A bad value in one field of a device, before any line is known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {reason}")]
pub struct FieldError {
    /// The inventory column (see the constants in this module).
    pub column: &'static str,
    pub reason: String,
}

/// One device's fields as text, as they come from a CSV row or from command-line flags.
/// Optional columns are `None` when absent; an empty value counts as absent too.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeviceFields<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub name: &'a str,
    pub host: &'a str,
    pub port: &'a str,
    pub username: &'a str,
    pub password: &'a str,
    pub routeros_version: &'a str,
    pub enabled: Option<&'a str>,
    pub backup_interval_seconds: Option<&'a str>,
    pub backup_cron: Option<&'a str>,
    pub ssh_key_file: Option<&'a str>,
    pub credential_profile: Option<&'a str>,
    /// The tenant's name (names the tenant; gives its id when `tenant_id` is empty).
    pub tenant: Option<&'a str>,
    /// Seconds, or `auto`; empty or absent keeps the device's.
    pub export_timeout_seconds: Option<&'a str>,
    /// The device's own jump host, `[user@]host[:port]`, logged in to with the device's
    /// credentials; `direct` to ignore its profile's and tenant's; empty (the column is
    /// there): none of its own. `None` (no column): left as it is.
    pub jump_host: Option<&'a str>,
}

fn at<T>(column: &'static str, r: Result<T, String>) -> Result<T, FieldError> {
    r.map_err(|reason| FieldError { column, reason })
}

impl DeviceFields<'_> {
    /// The tenant name given, checked (`None` when absent or empty).
    pub fn tenant_name(&self) -> Result<Option<String>, FieldError> {
        match self.tenant.filter(|t| !t.trim().is_empty()) {
            None => Ok(None),
            Some(t) => at(TENANT, tenant::parse_tenant_name(t)).map(Some),
        }
    }

    /// Whether the device's id is derived (the `id` field is empty).
    pub fn id_is_derived(&self) -> bool {
        self.id.trim().is_empty()
    }

    /// Validate every field; the first bad one is reported with its column.
    pub fn validate(&self) -> Result<NewDevice, FieldError> {
        let tenant_name = self.tenant_name()?;
        let tenant_id = if self.tenant_id.trim().is_empty() {
            tenant_name
                .as_deref()
                .map_or(tenant::DEFAULT_TENANT, tenant::id_for_name)
        } else {
            at(TENANT_ID, parse_uuid(self.tenant_id))?
        };
        let name = at(NAME, parse_name(self.name))?;
        let id = if self.id_is_derived() {
            tenant::device_id_for(tenant_id, &name)
        } else {
            at(ID, parse_uuid(self.id))?
        };
        let present = |v: Option<&str>| v.is_some_and(|v| !v.trim().is_empty());
        let credential_profile = at(
            CREDENTIAL_PROFILE,
            self.credential_profile
                .filter(|v| !v.trim().is_empty())
                .map(parse_name)
                .transpose(),
        )?;
        let has_key = present(self.ssh_key_file);
        // With a profile, the device's own user and password are optional (its own win
        // when it has a password or a key: then it needs its own user too); with a key,
        // the password is.
        let username = if credential_profile.is_some()
            && self.username.is_empty()
            && self.password.is_empty()
            && !has_key
        {
            String::new()
        } else {
            at(USERNAME, parse_username(self.username))?
        };
        let password = if (has_key || credential_profile.is_some()) && self.password.is_empty() {
            Secret::default()
        } else {
            at(PASSWORD, parse_password(self.password))?
        };
        if has_key && username.is_empty() {
            return Err(FieldError {
                column: USERNAME,
                reason: "empty (a device with a key of its own needs its user)".into(),
            });
        }
        Ok(NewDevice {
            id,
            tenant_id,
            name,
            host: at(HOST, parse_host(self.host))?,
            ssh_port: at(PORT, parse_port(self.port))?,
            username,
            password,
            ssh_key: None,
            credential_profile,
            // A column that is not there says nothing: keep what the device has.
            keep_ssh_key: self.ssh_key_file.is_none(),
            keep_credential_profile: self.credential_profile.is_none(),
            jump: at(
                JUMP_HOST,
                self.jump_host
                    .map(crate::jump::JumpSetting::parse)
                    .transpose(),
            )?,
            routeros_version: at(
                ROUTEROS_VERSION,
                parse_routeros_version(self.routeros_version),
            )?,
            enabled: at(ENABLED, parse_enabled(self.enabled.unwrap_or("")))?,
            backup_interval_seconds: at(
                BACKUP_INTERVAL_SECONDS,
                parse_interval(self.backup_interval_seconds.unwrap_or("")),
            )?,
            backup_cron: at(
                BACKUP_CRON,
                parse_cron_field(self.backup_cron.unwrap_or("")),
            )?,
            export_timeout_seconds: at(
                EXPORT_TIMEOUT_SECONDS,
                parse_export_timeout(self.export_timeout_seconds.unwrap_or("")),
            )?,
        })
    }
}

// ---- field validators (the reason texts read well after "column X: ") ----------------

/// An export timeout override: empty keeps the device's (`None`), `auto` removes it
/// (`Some(None)`), whole seconds from 1 to 3600 set it.
pub fn parse_export_timeout(s: &str) -> Result<Option<Option<u32>>, String> {
    if s.trim().is_empty() {
        return Ok(None);
    }
    crate::export_timeout::parse_override(s)
        .map(Some)
        .map_err(|e| format!("{s:?}: {e}"))
}

/// A UUID in any form `uuid` accepts (hyphenated, simple, braced, URN).
pub fn parse_uuid(s: &str) -> Result<Uuid, String> {
    Uuid::parse_str(s).map_err(|_| format!("{s:?} is not a UUID"))
}

fn plain_text(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("empty".into());
    }
    if s.chars().any(char::is_control) {
        return Err(format!("{s:?} contains a control character"));
    }
    Ok(s.to_string())
}

/// A device name: not empty (or only blanks), no control characters.
pub fn parse_name(s: &str) -> Result<String, String> {
    plain_text(s)
}

/// An SSH user name: not empty (or only blanks), no control characters.
pub fn parse_username(s: &str) -> Result<String, String> {
    plain_text(s)
}

/// A password: only its presence is checked, and the reason never shows it.
pub fn parse_password(s: &str) -> Result<Secret, String> {
    if s.is_empty() {
        Err("empty".into())
    } else {
        Ok(Secret::new(s))
    }
}

/// An IPv4 or IPv6 address (no brackets, no zone), or a DNS hostname: letters, digits,
/// hyphens and dots; labels of 1-63 characters not starting or ending with a hyphen; at
/// most 253 characters; a last label that is not all digits (so `10.0.0.256` is refused
/// rather than taken for a name). Nothing else: no port, no scheme, no user.
pub fn parse_host(s: &str) -> Result<String, String> {
    if s.parse::<IpAddr>().is_ok() || is_hostname(s) {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not an IP address or a DNS hostname"))
    }
}

fn is_hostname(s: &str) -> bool {
    if s.is_empty() || s.len() > 253 {
        return false;
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    s.split('.').all(label_ok)
        && !s
            .rsplit('.')
            .next()
            .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
}

/// A TCP port, 1-65535, in plain decimal digits.
pub fn parse_port(s: &str) -> Result<u16, String> {
    let bad = || format!("{s:?} is not a port (1-65535)");
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(bad()),
    }
}

/// Empty (unknown: the device is asked), or a RouterOS version such as `7.16.2`,
/// `6.49.10` or `7.17rc1`: dot-separated numbers, optionally followed by letters and
/// digits.
pub fn parse_routeros_version(s: &str) -> Result<Option<String>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let number_ok = !number.is_empty()
        && number
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let letters = suffix
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(suffix.len());
    let (tag, tag_number) = suffix.split_at(letters);
    let suffix_ok =
        suffix.is_empty() || (!tag.is_empty() && tag_number.bytes().all(|b| b.is_ascii_digit()));
    if number_ok && suffix_ok && s.len() <= 32 {
        Ok(Some(s.to_string()))
    } else {
        Err(format!(
            "{s:?} is not a RouterOS version (like 7.16.2 or 6.49.10)"
        ))
    }
}

/// `true` or `false` (any case); empty means `true`.
pub fn parse_enabled(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "" | "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{s:?} is not true or false")),
    }
}

/// A per-device backup interval: a positive whole number of seconds; empty means none
/// (the fleet's schedule applies).
pub fn parse_interval(s: &str) -> Result<Option<i32>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    match s.parse::<i32>() {
        Ok(n) if n > 0 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(n)),
        _ => Err(format!(
            "{s:?} is not a positive whole number of seconds (at most {})",
            i32::MAX
        )),
    }
}

/// A per-device cron expression (see [`parse_cron`]); empty means none.
pub fn parse_cron_field(s: &str) -> Result<Option<String>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    parse_cron(s).map_err(|e| e.to_string())?;
    Ok(Some(s.to_string()))
}

// ---- the CSV -----------------------------------------------------------------------

/// One parsed device and the line its row starts on.
#[derive(Debug, Clone)]
pub struct InventoryRow {
    pub line: u64,
    pub device: NewDevice,
    /// The row's `ssh_key_file`, for the importing command to read (`device.ssh_key`
    /// is `None` until it does).
    pub ssh_key_file: Option<String>,
    /// The `tenant` column's name for the device's tenant, when given.
    pub tenant_name: Option<String>,
    /// The row had no id: `device.id` was derived from its tenant and name.
    pub id_derived: bool,
}

/// Parse an inventory: every device, or the first error.
pub fn parse_inventory(bytes: &[u8]) -> Result<Vec<NewDevice>, InventoryError> {
    Ok(parse_inventory_rows(bytes)?
        .into_iter()
        .map(|r| r.device)
        .collect())
}

/// As [`parse_inventory`], keeping each device's line (to point back into the file
/// when the database refuses a row).
pub fn parse_inventory_rows(bytes: &[u8]) -> Result<Vec<InventoryRow>, InventoryError> {
    // A spreadsheet's UTF-8 byte order mark is not part of the first column's name.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut records = reader.byte_records();
    let mut lines = Lines::new(bytes);

    let header = match records.next() {
        None => {
            return Err(InventoryError::new(
                1,
                None,
                "no devices (the file is empty)",
            ));
        }
        Some(r) => r.map_err(|e| csv_error(e, &mut lines))?,
    };
    let header_line = lines.of(header.position());
    let columns = Columns::from_header(&header, header_line)?;

    let mut rows = Vec::new();
    let mut ids: HashMap<Uuid, u64> = HashMap::new();
    let mut names: HashMap<(Uuid, String), u64> = HashMap::new();
    let mut tenant_names: HashMap<Uuid, (String, u64)> = HashMap::new();
    for record in records {
        let record = record.map_err(|e| csv_error(e, &mut lines))?;
        let line = lines.of(record.position());
        if record.len() != columns.len {
            return Err(InventoryError::new(
                line,
                None,
                format!(
                    "{} field{}, expected {} (as in the header)",
                    record.len(),
                    if record.len() == 1 { "" } else { "s" },
                    columns.len
                ),
            ));
        }
        let fields = columns.fields(&record, line)?;
        let device = fields
            .validate()
            .map_err(|e| InventoryError::new(line, Some(e.column), e.reason))?;
        let tenant_name = fields
            .tenant_name()
            .map_err(|e| InventoryError::new(line, Some(e.column), e.reason))?;
        let id_derived = fields.id_is_derived();
        if let Some(n) = &tenant_name {
            match tenant_names.get(&device.tenant_id) {
                Some((first, at)) if !first.eq_ignore_ascii_case(n) => {
                    return Err(InventoryError::new(
                        line,
                        Some(TENANT),
                        format!(
                            "tenant {} is named {first:?} on line {at}, {n:?} here",
                            device.tenant_id
                        ),
                    ));
                }
                Some(_) => {}
                None => {
                    tenant_names.insert(device.tenant_id, (n.clone(), line));
                }
            }
        }
        if let Some(first) = ids.insert(device.id, line) {
            return Err(InventoryError::new(
                line,
                Some(ID),
                format!("duplicate id {} (also on line {first})", device.id),
            ));
        }
        if let Some(first) = names.insert((device.tenant_id, device.name.clone()), line) {
            return Err(InventoryError::new(
                line,
                Some(NAME),
                format!(
                    "duplicate name {:?} in tenant {} (also on line {first})",
                    device.name, device.tenant_id
                ),
            ));
        }
        let ssh_key_file = fields
            .ssh_key_file
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(str::to_string);
        rows.push(InventoryRow {
            line,
            device,
            ssh_key_file,
            tenant_name,
            id_derived,
        });
    }
    if rows.is_empty() {
        return Err(InventoryError::new(
            header_line,
            None,
            "no devices (only a header)",
        ));
    }
    Ok(rows)
}

/// Physical line numbers of records. (The `csv` crate's own line numbers count a record
/// from the end of the one before it, so blank lines and the `\n` of a CRLF would be
/// off by one; its byte offsets are exact.)
struct Lines<'a> {
    bytes: &'a [u8],
    /// Offset up to which newlines are counted in `line`.
    pos: usize,
    line: u64,
}

impl<'a> Lines<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Lines {
            bytes,
            pos: 0,
            line: 1,
        }
    }

    /// The line of the first byte at or after `position` that is not a line break:
    /// where the record starting there really begins. Offsets must not decrease.
    fn of(&mut self, position: Option<&csv::Position>) -> u64 {
        let Some(p) = position else {
            return self.line;
        };
        let mut start = usize::try_from(p.byte())
            .unwrap_or(usize::MAX)
            .min(self.bytes.len());
        while start < self.bytes.len() && matches!(self.bytes[start], b'\r' | b'\n') {
            start += 1;
        }
        if start > self.pos {
            // A line ends with `\n`, `\r\n`, or a lone `\r` (CSV saved by old Mac
            // software, which the csv crate reads as records too).
            let newlines = (self.pos..start)
                .filter(|&i| match self.bytes[i] {
                    b'\n' => true,
                    b'\r' => self.bytes.get(i + 1) != Some(&b'\n'),
                    _ => false,
                })
                .count();
            self.line += newlines as u64;
            self.pos = start;
        }
        self.line
    }
}

fn csv_error(e: csv::Error, lines: &mut Lines<'_>) -> InventoryError {
    let line = lines.of(e.position());
    // Reading from memory, the only errors are malformed CSV; say so without the data.
    let reason = match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => {
            format!("{len} fields, expected {expected_len}")
        }
        _ => "malformed CSV".to_string(),
    };
    InventoryError::new(line, None, reason)
}

/// Where each known column is in the rows.
struct Columns {
    len: usize,
    index: HashMap<&'static str, usize>,
}

impl Columns {
    fn from_header(header: &csv::ByteRecord, line: u64) -> Result<Columns, InventoryError> {
        let mut index = HashMap::new();
        let mut unknown = Vec::new();
        for (i, raw) in header.iter().enumerate() {
            let name = std::str::from_utf8(raw)
                .map_err(|_| InventoryError::new(line, None, "header is not UTF-8"))?;
            let known = REQUIRED_COLUMNS
                .iter()
                .chain(OPTIONAL_COLUMNS.iter())
                .find(|c| **c == name);
            match known {
                Some(c) => {
                    if index.insert(*c, i).is_some() {
                        return Err(InventoryError::new(
                            line,
                            Some(c),
                            "appears twice in the header",
                        ));
                    }
                }
                None => unknown.push(format!("{name:?}")),
            }
        }
        if index.len() * 2 < REQUIRED_COLUMNS.len() {
            // Most likely a file without a header, whose first row is a device (a value
            // may happen to equal a column name): its values, a password among them, are
            // not repeated.
            return Err(InventoryError::new(
                line,
                None,
                format!(
                    "no header row: the first line names {} of the columns {}",
                    if index.is_empty() {
                        "none".to_string()
                    } else {
                        format!("only {}", index.len())
                    },
                    REQUIRED_COLUMNS.join(",")
                ),
            ));
        }
        if !unknown.is_empty() {
            return Err(InventoryError::new(
                line,
                None,
                format!(
                    "unknown column{} {} (known: {}, {})",
                    if unknown.len() == 1 { "" } else { "s" },
                    unknown.join(", "),
                    REQUIRED_COLUMNS.join(", "),
                    OPTIONAL_COLUMNS.join(", ")
                ),
            ));
        }
        let missing: Vec<&str> = REQUIRED_COLUMNS
            .iter()
            .copied()
            .filter(|c| !index.contains_key(c))
            .collect();
        if !missing.is_empty() {
            return Err(InventoryError::new(
                line,
                None,
                format!(
                    "missing column{} {}",
                    if missing.len() == 1 { "" } else { "s" },
                    missing.join(", ")
                ),
            ));
        }
        Ok(Columns {
            len: header.len(),
            index,
        })
    }

    fn get<'r>(
        &self,
        record: &'r csv::ByteRecord,
        column: &'static str,
        line: u64,
    ) -> Result<Option<&'r str>, InventoryError> {
        let Some(&i) = self.index.get(column) else {
            return Ok(None);
        };
        let raw = record.get(i).unwrap_or_default();
        std::str::from_utf8(raw)
            .map(Some)
            .map_err(|_| InventoryError::new(line, Some(column), "not UTF-8"))
    }

    fn fields<'r>(
        &self,
        record: &'r csv::ByteRecord,
        line: u64,
    ) -> Result<DeviceFields<'r>, InventoryError> {
        let req = |c| Ok::<_, InventoryError>(self.get(record, c, line)?.unwrap_or_default());
        Ok(DeviceFields {
            id: req(ID)?,
            tenant_id: req(TENANT_ID)?,
            name: req(NAME)?,
            host: req(HOST)?,
            port: req(PORT)?,
            username: req(USERNAME)?,
            password: req(PASSWORD)?,
            routeros_version: req(ROUTEROS_VERSION)?,
            enabled: self.get(record, ENABLED, line)?,
            backup_interval_seconds: self.get(record, BACKUP_INTERVAL_SECONDS, line)?,
            backup_cron: self.get(record, BACKUP_CRON, line)?,
            ssh_key_file: self.get(record, SSH_KEY_FILE, line)?,
            credential_profile: self.get(record, CREDENTIAL_PROFILE, line)?,
            jump_host: self.get(record, JUMP_HOST, line)?,
            tenant: self.get(record, TENANT, line)?,
            export_timeout_seconds: self.get(record, EXPORT_TIMEOUT_SECONDS, line)?,
        })
    }
}

#[cfg(test)]
mod tests;
