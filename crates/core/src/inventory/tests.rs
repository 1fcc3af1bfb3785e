use super::*;

const HEADER: &str = "id,tenant_id,name,host,port,username,password,routeros_version\n";
const T: &str = "11111111-1111-1111-1111-111111111111";

fn id(n: u32) -> String {
    format!("00000000-0000-0000-0000-{n:012}")
}

fn row(n: u32) -> String {
    format!(
        "{},{T},r{n},10.0.0.{n},22,backup,pw-secret-{n},7.16.2\n",
        id(n)
    )
}

fn file(rows: &[String]) -> Vec<u8> {
    let mut s = HEADER.to_string();
    for r in rows {
        s.push_str(r);
    }
    s.into_bytes()
}

/// Parse and expect an error; check it never shows a password from the file.
fn err(bytes: &[u8]) -> InventoryError {
    let e = parse_inventory(bytes).unwrap_err();
    let shown = e.to_string();
    assert!(!shown.contains("pw-secret"), "password in {shown}");
    assert!(!shown.contains("hunter2"), "password in {shown}");
    e
}

fn at(e: &InventoryError, line: u64, column: Option<&str>) {
    assert_eq!(e.line, line, "{e}");
    assert_eq!(e.column.as_deref(), column, "{e}");
}

/// Replace field `col` (0-based, simulator order) of device `n`'s row.
fn row_with(n: u32, col: usize, value: &str) -> String {
    let r = row(n);
    let mut f: Vec<&str> = r.trim_end().split(',').collect();
    f[col] = value;
    format!("{}\n", f.join(","))
}

#[test]
fn parses_the_simulator_format() {
    let rows: Vec<String> = (1..=3).map(row).collect();
    let devices = parse_inventory(&file(&rows)).unwrap();
    assert_eq!(devices.len(), 3);
    let d = &devices[1];
    assert_eq!(d.id.to_string(), id(2));
    assert_eq!(d.tenant_id.to_string(), T);
    assert_eq!(d.name, "r2");
    assert_eq!(d.host, "10.0.0.2");
    assert_eq!(d.ssh_port, 22);
    assert_eq!(d.username, "backup");
    assert_eq!(d.password.expose(), "pw-secret-2");
    assert_eq!(d.routeros_version.as_deref(), Some("7.16.2"));
    assert!(d.enabled);
    assert_eq!(d.backup_interval_seconds, None);
    assert_eq!(d.backup_cron, None);
}

#[test]
fn simulator_inventory_round_trips() {
    // The simulator quotes fields with commas or quotes; passwords are alphanumeric,
    // but a hand-written file may hold anything.
    let csv = format!(
        "{HEADER}{},{T},\"core, rack 2\",gw.example.net,2222,admin,\"p,w\"\"x\",\n",
        id(1)
    );
    let d = &parse_inventory(csv.as_bytes()).unwrap()[0];
    assert_eq!(d.name, "core, rack 2");
    assert_eq!(d.password.expose(), "p,w\"x");
    assert_eq!(d.routeros_version, None);
    assert_eq!(d.host, "gw.example.net");
}

#[test]
fn optional_columns_in_any_order() {
    let csv = format!(
        "backup_cron,password,enabled,routeros_version,host,username,port,name,backup_interval_seconds,tenant_id,id\n\
         30 2 * * *,pw,false,6.49.10,::1,u,8022,a,,{T},{}\n\
         ,pw,TRUE,7.17rc1,192.0.2.1,u,22,b,3600,{T},{}\n\
         ,pw,,,192.0.2.2,u,22,c,,{T},{}\n",
        id(1),
        id(2),
        id(3)
    );
    let d = parse_inventory(csv.as_bytes()).unwrap();
    assert_eq!(d[0].backup_cron.as_deref(), Some("30 2 * * *"));
    assert!(!d[0].enabled);
    assert_eq!(d[0].host, "::1");
    assert_eq!(d[0].ssh_port, 8022);
    assert_eq!(d[0].routeros_version.as_deref(), Some("6.49.10"));
    assert_eq!(d[1].backup_interval_seconds, Some(3600));
    assert!(d[1].enabled);
    assert_eq!(d[1].routeros_version.as_deref(), Some("7.17rc1"));
    assert!(d[2].enabled);
    assert_eq!(d[2].backup_interval_seconds, None);
    assert_eq!(d[2].backup_cron, None);
}

#[test]
fn crlf_bom_and_blank_lines() {
    let csv = format!(
        "\u{feff}{}\r\n{}\r\n\r\n{}\r\n",
        HEADER.trim_end(),
        row(1).trim_end(),
        row(2).trim_end()
    );
    assert_eq!(parse_inventory(csv.as_bytes()).unwrap().len(), 2);
    // Line numbers still count the blank line.
    let csv = format!("{HEADER}{}\n{}", row(1), row_with(2, 4, "0"));
    let e = err(csv.as_bytes());
    at(&e, 4, Some("port"));
    // CRLF and blank lines, before the header too.
    let csv =
        format!("{HEADER}{}{}\n{}", row(1), row(2), row_with(3, 4, "0")).replace('\n', "\r\n");
    at(&err(format!("\r\n{csv}").as_bytes()), 6, Some("port"));
    // Old Mac line endings (a lone `\r`) count as lines too.
    let csv = format!("{HEADER}{}{}\n{}", row(1), row(2), row_with(3, 4, "0")).replace('\n', "\r");
    at(&err(csv.as_bytes()), 5, Some("port"));
}

#[test]
fn bad_port_names_line_and_column() {
    let e = err(&file(&[
        row(1),
        row(2),
        row(3),
        row(4),
        row(5),
        row_with(6, 4, "70000"),
    ]));
    at(&e, 7, Some("port"));
    assert_eq!(
        e.to_string(),
        "line 7, column port: \"70000\" is not a port (1-65535)"
    );
    for bad in ["0", "", "-1", "+22", "22 ", "x"] {
        at(&err(&file(&[row_with(1, 4, bad)])), 2, Some("port"));
    }
}

#[test]
fn bad_ids() {
    let e = err(&file(&[row(1), row_with(2, 0, "not-a-uuid")]));
    at(&e, 3, Some("id"));
    assert_eq!(e.reason, "\"not-a-uuid\" is not a UUID");
    let e = err(&file(&[row_with(1, 1, "x")]));
    at(&e, 2, Some("tenant_id"));
}

#[test]
fn empty_ids_are_derived_from_the_tenant_and_the_name() {
    // No tenant: the default tenant; no id: derived, the same on every import.
    let text = format!("{HEADER},,r1,10.0.0.1,22,backup,pw,\n,,r2,10.0.0.2,22,backup,pw,\n");
    let rows = parse_inventory_rows(text.as_bytes()).unwrap();
    assert_eq!(rows[0].device.tenant_id, tenant::DEFAULT_TENANT);
    assert_eq!(
        rows[0].device.id,
        tenant::device_id_for(tenant::DEFAULT_TENANT, "r1")
    );
    assert!(rows[0].id_derived && rows[1].id_derived);
    assert_ne!(rows[0].device.id, rows[1].device.id);
    let again = parse_inventory_rows(text.as_bytes()).unwrap();
    assert_eq!(again[0].device.id, rows[0].device.id);
    // A tenant name gives the tenant's id when tenant_id is empty.
    let head = "id,tenant_id,name,host,port,username,password,routeros_version,tenant\n";
    let text =
        format!("{head},,r1,10.0.0.1,22,backup,pw,,Acme\n,{T},r1,10.0.0.1,22,backup,pw,,globex\n");
    let rows = parse_inventory_rows(text.as_bytes()).unwrap();
    assert_eq!(rows[0].device.tenant_id, tenant::id_for_name("acme"));
    assert_eq!(rows[0].tenant_name.as_deref(), Some("Acme"));
    assert_eq!(rows[1].device.tenant_id.to_string(), T);
    assert_eq!(rows[1].tenant_name.as_deref(), Some("globex"));
    assert!(!rows[0].id_derived || rows[0].device.id != rows[1].device.id);
    // One tenant id, two names: refused where the second one is.
    let text =
        format!("{head},{T},r1,10.0.0.1,22,backup,pw,,a\n,{T},r2,10.0.0.2,22,backup,pw,,b\n");
    let e = err(text.as_bytes());
    at(&e, 3, Some("tenant"));
    // A name that is a UUID is refused.
    let text = format!("{head},,r1,10.0.0.1,22,backup,pw,,{T}\n");
    at(&err(text.as_bytes()), 2, Some("tenant"));
}

#[test]
fn empty_name_username_password() {
    at(&err(&file(&[row_with(1, 2, "")])), 2, Some("name"));
    at(&err(&file(&[row_with(1, 2, "  ")])), 2, Some("name"));
    at(
        &err(&file(&[row(1), row_with(2, 5, "")])),
        3,
        Some("username"),
    );
    let e = err(&file(&[row(1), row(2), row_with(3, 6, "")]));
    at(&e, 4, Some("password"));
    assert_eq!(e.to_string(), "line 4, column password: empty");
}

#[test]
fn control_characters_in_names() {
    let csv = format!("{HEADER}{},{T},\"a\nb\",10.0.0.1,22,u,pw,\n", id(1));
    let e = err(csv.as_bytes());
    at(&e, 2, Some("name"));
    assert!(e.reason.contains("control character"), "{e}");
}

#[test]
fn hosts() {
    for good in [
        "10.0.0.1",
        "2001:db8::1",
        "::1",
        "router1",
        "gw-1.example.net",
        "a.b.c",
        "1a.example",
        &"a".repeat(63),
    ] {
        assert!(parse_host(good).is_ok(), "{good}");
    }
    let long = ["abcdefghi"; 26].join("."); // 259 characters
    for bad in [
        "",
        "10.0.0.256",
        "1234",
        "[::1]",
        "fe80::1%eth0",
        "host:22",
        "user@host",
        "ssh://host",
        "under_score.example",
        "-lead.example",
        "trail-.example",
        "a..b",
        "trailing.dot.",
        ".lead",
        "sp ace",
        "ünicode.example",
        &"a".repeat(64),
        &long,
    ] {
        assert!(parse_host(bad).is_err(), "{bad}");
    }
    let e = err(&file(&[row_with(1, 3, "host_name")]));
    at(&e, 2, Some("host"));
    assert_eq!(
        e.reason,
        "\"host_name\" is not an IP address or a DNS hostname"
    );
}

#[test]
fn routeros_versions() {
    for good in [
        "7.16.2",
        "6.49.10",
        "7.8",
        "7",
        "7.17rc1",
        "7.15beta4",
        "7.1rc",
    ] {
        assert!(parse_routeros_version(good).unwrap().is_some(), "{good}");
    }
    assert_eq!(parse_routeros_version("").unwrap(), None);
    for bad in [
        "v7.16", "7..16", "7.16.", ".7", "7.16 rc1", "7.16-rc1", "rc1", "7.16rc1a", "x",
    ] {
        assert!(parse_routeros_version(bad).is_err(), "{bad}");
    }
    let e = err(&file(&[row(1), row_with(2, 7, "seven")]));
    at(&e, 3, Some("routeros_version"));
}

#[test]
fn key_file_and_profile_columns_make_the_password_optional() {
    let h = "id,tenant_id,name,host,port,username,password,routeros_version,ssh_key_file,credential_profile\n";
    let csv = format!(
        "{h}{},{T},k,10.0.0.1,22,backup,,7.16.2,keys/k.key,\n\
         {},{T},p,10.0.0.2,22,,,7.16.2,,shared\n\
         {},{T},b,10.0.0.3,22,backup,pw-secret-3,,keys/b.key,shared\n",
        id(1),
        id(2),
        id(3)
    );
    let rows = parse_inventory_rows(csv.as_bytes()).unwrap();
    assert_eq!(rows[0].ssh_key_file.as_deref(), Some("keys/k.key"));
    assert!(rows[0].device.password.is_empty());
    assert_eq!(rows[0].device.credential_profile, None);
    assert_eq!(rows[1].device.credential_profile.as_deref(), Some("shared"));
    assert_eq!(rows[1].device.username, "");
    assert_eq!(rows[1].ssh_key_file, None);
    assert_eq!(rows[2].device.password.expose(), "pw-secret-3");
    // Neither a key nor a profile: the password is required as before.
    let e = err(format!("{h}{},{T},x,10.0.0.4,22,backup,,7.16.2,,\n", id(4)).as_bytes());
    at(&e, 2, Some(PASSWORD));
    // A key of its own needs the device's user.
    let e = err(format!("{h}{},{T},x,10.0.0.4,22,,,7.16.2,k.key,\n", id(4)).as_bytes());
    at(&e, 2, Some(USERNAME));
    // So does a password of its own beside a profile (its own credentials win: it
    // would log in as the user "").
    let e = err(format!("{h}{},{T},x,10.0.0.4,22,,pw-own,7.16.2,,shared\n", id(4)).as_bytes());
    at(&e, 2, Some(USERNAME));
    let e = err(format!("{h}{},{T},x,10.0.0.4,22,,,7.16.2,k.key,shared\n", id(4)).as_bytes());
    at(&e, 2, Some(USERNAME));
}

#[test]
fn optional_column_errors() {
    let head = "id,tenant_id,name,host,port,username,password,routeros_version,enabled,backup_interval_seconds,backup_cron\n";
    let line = |enabled: &str, interval: &str, cron: &str| {
        format!(
            "{head}{},{T},a,10.0.0.1,22,u,pw,7.16,{enabled},{interval},{cron}\n",
            id(1)
        )
    };
    let e = err(line("yes", "", "").as_bytes());
    at(&e, 2, Some("enabled"));
    assert_eq!(e.reason, "\"yes\" is not true or false");
    for bad in ["0", "-5", "1.5", "3000000000", "+60", "sixty"] {
        at(
            &err(line("", bad, "").as_bytes()),
            2,
            Some("backup_interval_seconds"),
        );
    }
    let e = err(line("", "", "* * *").as_bytes());
    at(&e, 2, Some("backup_cron"));
    assert!(e.reason.contains("found 3"), "{e}");
    at(
        &err(line("", "", "61 * * * *").as_bytes()),
        2,
        Some("backup_cron"),
    );
    assert!(parse_inventory(line("false", "60", "0 */4 * * *").as_bytes()).is_ok());
}

#[test]
fn wrong_number_of_fields() {
    let short = "00000000-0000-0000-0000-000000000002,x\n".to_string();
    let e = err(&file(&[row(1), short]));
    at(&e, 3, None);
    assert_eq!(e.reason, "2 fields, expected 8 (as in the header)");
    let long = format!("{},extra\n", row(2).trim_end());
    at(&err(&file(&[row(1), row(3), long])), 4, None);
}

#[test]
fn invalid_utf8() {
    let mut bytes = file(&[row(1)]);
    bytes.extend_from_slice(format!("{},{T},r", id(2)).as_bytes());
    bytes.push(0xff);
    bytes.extend_from_slice(b",10.0.0.2,22,u,pw,7.16\n");
    let e = err(&bytes);
    at(&e, 3, Some("name"));
    assert_eq!(e.reason, "not UTF-8");
    // In a password: only the column is named.
    let mut bytes = file(&[row(1), row(2)]);
    bytes.extend_from_slice(format!("{},{T},r3,10.0.0.3,22,u,hunter2", id(3)).as_bytes());
    bytes.push(0xfe);
    bytes.extend_from_slice(b",7.16\n");
    let e = err(&bytes);
    at(&e, 4, Some("password"));
    assert_eq!(e.to_string(), "line 4, column password: not UTF-8");
    let mut header = b"id,tenant_id,na\xffme".to_vec();
    header.extend_from_slice(b",host,port,username,password,routeros_version\n");
    at(&err(&header), 1, None);
}

#[test]
fn duplicates_name_both_lines() {
    let e = err(&file(&[row(1), row(2), row_with(1, 2, "other")]));
    at(&e, 4, Some("id"));
    assert_eq!(e.reason, format!("duplicate id {} (also on line 2)", id(1)));
    let e = err(&file(&[row(1), row(2), row(3), row_with(4, 2, "r2")]));
    at(&e, 5, Some("name"));
    assert_eq!(
        e.reason,
        format!("duplicate name \"r2\" in tenant {T} (also on line 3)")
    );
    // The same name in another tenant is fine.
    let other = row_with(4, 1, "22222222-2222-2222-2222-222222222222");
    let other = other.replace(",r4,", ",r2,");
    assert_eq!(parse_inventory(&file(&[row(2), other])).unwrap().len(), 2);
}

#[test]
fn header_errors() {
    let e = err(format!(
        "{}\n{}",
        HEADER.trim_end().replace("port", "ssh_port"),
        row(1)
    )
    .as_bytes());
    at(&e, 1, None);
    assert!(e.reason.starts_with("unknown column \"ssh_port\""), "{e}");
    let e = err(format!("{},Port,x\n", HEADER.trim_end()).as_bytes());
    assert!(
        e.reason.starts_with("unknown columns \"Port\", \"x\""),
        "{e}"
    );
    let e = err(b"id,tenant_id,name,host,port,username\n");
    at(&e, 1, None);
    assert_eq!(e.reason, "missing columns password, routeros_version");
    let e = err(format!("{},port\n", HEADER.trim_end()).as_bytes());
    at(&e, 1, Some("port"));
    // A file without a header: the first device's values are not echoed.
    let e = err(row(1).as_bytes());
    at(&e, 1, None);
    assert!(e.reason.starts_with("no header row"), "{e}");
    assert!(!e.reason.contains("10.0.0.1"), "{e}");
    let e = err(b"");
    assert!(e.reason.starts_with("no devices"), "{e}");
    // A device row one of whose values equals a column name is still not a header,
    // and its other values (the password) are not echoed.
    let e =
        err(b"0c8f3a5e-0000-4000-8000-000000000001,name,host,10.0.0.1,22,admin,s3cret-pw,7.16\n");
    assert!(e.reason.starts_with("no header row"), "{e}");
    assert!(!e.reason.contains("s3cret-pw"), "{e}");
    // Header names are matched exactly: no trimming, no case folding.
    let e = err(HEADER.replace("name", " name").as_bytes());
    assert!(e.reason.contains("\" name\""), "{e}");
}

#[test]
fn no_devices() {
    let e = err(b"");
    at(&e, 1, None);
    assert!(e.reason.starts_with("no devices"), "{e}");
    let e = err(HEADER.as_bytes());
    at(&e, 1, None);
    assert!(e.reason.starts_with("no devices"), "{e}");
    assert!(err(b"\n\n").reason.starts_with("no devices"));
}

#[test]
fn rows_keep_their_lines() {
    // A quoted newline in a password makes row 1 span lines 2-3; row 2 is on line 4.
    let csv = format!(
        "{HEADER}{},{T},a,10.0.0.1,22,u,\"pw-secret\nsecond line\",\n{}",
        id(1),
        row_with(2, 4, "99999")
    );
    let e = err(csv.as_bytes());
    at(&e, 4, Some("port"));
    let csv = format!("{HEADER}\n{}\n{}", row(1), row(2));
    let rows = parse_inventory_rows(csv.as_bytes()).unwrap();
    assert_eq!(rows.iter().map(|r| r.line).collect::<Vec<_>>(), [3, 5]);
}
