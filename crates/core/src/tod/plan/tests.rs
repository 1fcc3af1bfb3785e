use super::*;

const FP: &str = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const FP2: &str = "SHA256:BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

fn key() -> CredentialKey {
    CredentialKey::from_base64(&CredentialKey::generate_base64()).unwrap()
}

fn sealed(key: &CredentialKey, user: &str, pw: &str) -> Vec<u8> {
    key.seal_bytes(
        &[],
        format!(r#"{{"username":"{user}","password":"{pw}"}}"#).as_bytes(),
    )
}

fn row(key: &CredentialKey, name: &str) -> UpstreamDevice {
    UpstreamDevice {
        id: Uuid::new_v4(),
        tenant_id: Uuid::nil(),
        hostname: name.into(),
        ip_address: "192.0.2.7".into(),
        ssh_port: 22,
        routeros_version: Some("7.16.2 (stable)".into()),
        device_type: "routeros".into(),
        encrypted_credentials: Some(sealed(key, "admin", "pw-1")),
        ..UpstreamDevice::default()
    }
}

fn ours_of(c: &Candidate) -> Ours {
    Ours {
        id: c.id,
        tenant_id: c.tenant_id,
        name: c.name.clone(),
        host: c.host.clone(),
        ssh_port: i32::from(c.ssh_port),
        username: c.username.clone(),
        password: Some(c.password.clone()),
        routeros_version: c.routeros_version.clone(),
        fingerprint: c.host_key.clone(),
        synced: true,
        upstream_host_key: c.host_key.clone(),
    }
}

#[test]
fn credentials_are_chosen_as_the_go_poller_chooses_them() {
    let k = key();
    let dev = sealed(&k, "d", "p");
    let prof = sealed(&k, "p", "p");
    let transit = Some("vault:v1:abc".to_string());
    let mut d = row(&k, "r1");
    d.encrypted_credentials = Some(dev.clone());
    d.profile_encrypted_credentials = Some(prof.clone());
    d.credential_profile_id = Some(Uuid::new_v4());
    assert_eq!(
        select_credentials(&d),
        Selected::Legacy(Origin::Device, &dev)
    );
    d.encrypted_credentials_transit = transit.clone();
    assert_eq!(select_credentials(&d), Selected::Transit(Origin::Device));
    d.encrypted_credentials_transit = Some("not-transit".into());
    assert_eq!(
        select_credentials(&d),
        Selected::Legacy(Origin::Device, &dev)
    );
    d.encrypted_credentials = Some(Vec::new());
    assert_eq!(
        select_credentials(&d),
        Selected::Legacy(Origin::Profile, &prof)
    );
    d.profile_encrypted_credentials_transit = transit;
    assert_eq!(select_credentials(&d), Selected::Transit(Origin::Profile));
    d.profile_encrypted_credentials_transit = None;
    d.profile_encrypted_credentials = None;
    assert_eq!(select_credentials(&d), Selected::None);
}

#[test]
fn triage_takes_routeros_rows_with_usable_credentials_and_says_why_not() {
    let k = key();
    let good = row(&k, "good");
    let mut profile = row(&k, "by-profile");
    profile.encrypted_credentials = None;
    profile.credential_profile_id = Some(Uuid::new_v4());
    profile.profile_encrypted_credentials = Some(sealed(&k, "svc", "pw-2"));
    profile.ssh_port = 2222;
    profile.ssh_host_key_fingerprint = Some(format!(" {FP} "));
    let mut snmp = row(&k, "switch");
    snmp.device_type = "snmp".into();
    let mut transit = row(&k, "transit");
    transit.encrypted_credentials_transit = Some("vault:v1:xyz".into());
    let mut broken = row(&k, "broken");
    broken.encrypted_credentials = Some(vec![1, 2, 3]);
    let mut altered = row(&k, "altered");
    if let Some(b) = altered.encrypted_credentials.as_mut() {
        b[20] ^= 0xff;
    }
    let mut bare = row(&k, "bare");
    bare.encrypted_credentials = None;
    let mut empty_profile = row(&k, "empty-profile");
    empty_profile.encrypted_credentials = None;
    empty_profile.credential_profile_id = Some(Uuid::new_v4());
    let mut bad_host = row(&k, "bad-host");
    bad_host.ip_address = "10.0.0.256".into();
    let mut bad_port = row(&k, "bad-port");
    bad_port.ssh_port = 70_000;
    let mut bad_fp = row(&k, "bad-fp");
    bad_fp.ssh_host_key_fingerprint = Some("MD5:aa:bb".into());
    let rows = vec![
        good.clone(),
        profile.clone(),
        snmp.clone(),
        transit.clone(),
        broken.clone(),
        altered.clone(),
        bare.clone(),
        empty_profile.clone(),
        bad_host.clone(),
        bad_port.clone(),
        bad_fp.clone(),
    ];
    let t = triage(&rows, &k).unwrap();
    let names: Vec<&str> = t.candidates.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["good", "by-profile"]);
    let g = &t.candidates[0];
    assert_eq!(
        (g.username.as_str(), g.password.expose()),
        ("admin", "pw-1")
    );
    assert_eq!(g.routeros_version.as_deref(), Some("7.16.2"));
    assert_eq!((g.host.as_str(), g.ssh_port), ("192.0.2.7", 22));
    let p = &t.candidates[1];
    assert_eq!((p.username.as_str(), p.ssh_port), ("svc", 2222));
    assert_eq!(p.host_key.as_deref(), Some(FP));
    let reason = |id: Uuid| {
        t.skipped
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.reason.clone())
    };
    assert_eq!(
        reason(transit.id),
        Some(SkipReason::Transit(Origin::Device))
    );
    assert_eq!(
        reason(broken.id),
        Some(SkipReason::Unreadable(
            Origin::Device,
            Unreadable::TooShort(3)
        ))
    );
    assert_eq!(
        reason(altered.id),
        Some(SkipReason::Unreadable(Origin::Device, Unreadable::Decrypt))
    );
    assert_eq!(reason(empty_profile.id), Some(SkipReason::NoCredentials));
    assert!(matches!(reason(bad_host.id), Some(SkipReason::BadHost(_))));
    assert_eq!(reason(bad_port.id), Some(SkipReason::BadPort(70_000)));
    assert_eq!(reason(bad_fp.id), Some(SkipReason::BadFingerprint));
    assert_eq!(reason(snmp.id), None, "not ours: not listed");
    assert_eq!(reason(bare.id), None);
    assert_eq!(t.without_credentials.len(), 1);
    assert!(!t.routeros_ids.contains(&snmp.id));
    assert!(t.routeros_ids.contains(&bare.id) && t.routeros_ids.contains(&transit.id));
    for s in &t.skipped {
        let text = s.reason.to_string();
        assert!(
            !text.contains("pw-1") && !text.contains("vault:v1:xyz"),
            "{text}"
        );
    }
}

#[test]
fn the_wrong_key_fails_the_whole_triage_but_one_bad_row_does_not() {
    let k = key();
    let rows = vec![row(&k, "a"), row(&k, "b")];
    assert_eq!(triage(&rows, &key()).unwrap_err(), WrongKey { failed: 2 });
    // Only too-short (malformed) ciphertexts: not a key problem.
    let mut short = row(&k, "short");
    short.encrypted_credentials = Some(vec![0; 5]);
    assert!(triage(&[short.clone()], &key()).is_ok());
    // Nothing to open: no verdict on the key.
    let mut transit = row(&k, "t");
    transit.encrypted_credentials_transit = Some("vault:v2:x".into());
    assert!(triage(&[transit], &key()).is_ok());
    let mut altered = row(&k, "altered");
    if let Some(b) = altered.encrypted_credentials.as_mut() {
        b[13] ^= 1;
    }
    let t = triage(&[row(&k, "fine"), altered, short], &k).unwrap();
    assert_eq!(t.candidates.len(), 1);
    assert_eq!(t.skipped.len(), 2);
}

#[test]
fn versions_and_pins_from_the_backend() {
    assert_eq!(
        version_hint(Some("7.16.2 (stable)")).as_deref(),
        Some("7.16.2")
    );
    assert_eq!(version_hint(Some("6.49.10")).as_deref(), Some("6.49.10"));
    assert_eq!(version_hint(Some("stable")), None);
    assert_eq!(version_hint(Some("  ")), None);
    assert_eq!(version_hint(None), None);
    assert_eq!(upstream_pin(None), Ok(None));
    assert_eq!(upstream_pin(Some(" ")), Ok(None));
    assert_eq!(upstream_pin(Some(FP)), Ok(Some(FP.to_string())));
    assert_eq!(
        upstream_pin(Some("SHA256:short")),
        Err(SkipReason::BadFingerprint)
    );
}

#[test]
fn pins_move_one_way_at_a_time() {
    // Upstream pinned: ours follows (changed only when it differs).
    let p = pin_plan(Some(FP), None, None);
    assert_eq!(
        (p.ours.as_deref(), p.changed, p.write_back),
        (Some(FP), true, None)
    );
    let p = pin_plan(Some(FP), Some(FP), Some(FP));
    assert!(!p.changed && p.write_back.is_none());
    let p = pin_plan(Some(FP2), Some(FP), Some(FP));
    assert_eq!((p.ours.as_deref(), p.changed), (Some(FP2), true));
    // Upstream reset by an operator since the last sync: ours is forgotten.
    let p = pin_plan(None, Some(FP), Some(FP));
    assert_eq!((p.ours, p.changed, p.write_back), (None, true, None));
    // Never pinned upstream: ours (trust on first use) is written back.
    let p = pin_plan(None, None, Some(FP));
    assert_eq!(
        (p.ours.as_deref(), p.changed, p.write_back.as_deref()),
        (Some(FP), false, Some(FP))
    );
    let p = pin_plan(None, None, None);
    assert_eq!((p.ours, p.changed, p.write_back), (None, false, None));
}

#[test]
fn the_plan_inserts_updates_keeps_and_removes() {
    let k = key();
    let rows: Vec<UpstreamDevice> = (0..5).map(|i| row(&k, &format!("r{i}"))).collect();
    let t = triage(&rows, &k).unwrap();
    let c = t.candidates.clone();
    // r0 is new; r1 unchanged; r2 has a new password upstream (and was auth-blocked);
    // r3 was renamed upstream; r4 exists here, not synced (adopted, unchanged).
    let mut ours: Vec<Ours> = c[1..].iter().map(ours_of).collect();
    ours[1].password = Some(Secret::new("old"));
    ours[2].name = "old-name".into();
    ours[3].synced = false;
    ours[3].upstream_host_key = None;
    let gone = Ours {
        id: Uuid::new_v4(),
        name: "gone".into(),
        ..ours_of(&c[1])
    };
    let mut local = gone.clone();
    local.id = Uuid::new_v4();
    local.name = "local".into();
    local.synced = false;
    ours.push(gone.clone());
    ours.push(local.clone());
    let p = plan(t, &ours, &[]);
    assert_eq!(p.inserts.len(), 1);
    assert_eq!(p.inserts[0].device.id, c[0].id);
    let updated: Vec<Uuid> = p.updates.iter().map(|w| w.device.id).collect();
    assert_eq!(updated, [c[2].id, c[3].id]);
    assert!(p.updates[0].password_changed && p.updates[0].credentials_changed);
    assert!(!p.updates[1].credentials_changed);
    assert_eq!(p.unchanged, 2);
    assert_eq!(p.adopt, [(c[4].id, None)]);
    assert_eq!(p.removals, [gone.id], "only synced devices are removed");
    assert!(p.skipped.is_empty() && p.notes.is_empty());
}

#[test]
fn an_empty_upstream_removes_nothing_and_says_so() {
    let k = key();
    let c = triage(&[row(&k, "x")], &k).unwrap().candidates;
    let ours = vec![ours_of(&c[0])];
    let p = plan(triage(&[], &k).unwrap(), &ours, &[]);
    assert!(p.removals.is_empty());
    assert_eq!(p.notes.len(), 1);
    // A device upstream that is only unreadable now is kept, not removed.
    let mut r = row(&k, "x");
    r.id = c[0].id;
    r.encrypted_credentials_transit = Some("vault:v1:z".into());
    let p = plan(triage(&[r], &k).unwrap(), &ours, &[]);
    assert!(p.removals.is_empty() && p.updates.is_empty());
    assert_eq!(p.skipped.len(), 1);
    // Its type changed: not a RouterOS device any more, removed.
    let mut r = row(&k, "x");
    r.id = c[0].id;
    r.device_type = "snmp".into();
    let other = row(&k, "y");
    let p = plan(triage(&[r, other], &k).unwrap(), &ours, &[]);
    assert_eq!(p.removals, [c[0].id]);
}

#[test]
fn names_and_tenants_here_are_respected() {
    let k = key();
    let mut a = row(&k, "edge");
    let b = row(&k, "core");
    let t = triage(&[a.clone(), b.clone()], &k).unwrap();
    // A local device (not synced) is called "edge" in the tenant: a is skipped.
    let local = Uuid::new_v4();
    let p = plan(t, &[], &[(local, Uuid::nil(), "edge".into())]);
    assert_eq!(p.inserts.len(), 1);
    assert_eq!(p.skipped[0].reason, SkipReason::NameTaken(local));
    // Two synced devices swap names: both updated.
    let t = triage(&[a.clone(), b.clone()], &k).unwrap();
    let mut ours: Vec<Ours> = t.candidates.iter().map(ours_of).collect();
    ours[0].name = "core".into();
    ours[1].name = "edge".into();
    let p = plan(t, &ours, &[]);
    assert_eq!(p.updates.len(), 2);
    assert!(p.skipped.is_empty());
    // The same swap when one side is unreadable: the other cannot take its name.
    let mut b2 = b.clone();
    b2.encrypted_credentials_transit = Some("vault:v1:q".into());
    let t = triage(&[a.clone(), b2], &k).unwrap();
    let p = plan(t, &ours, &[]);
    assert_eq!(p.updates.len(), 0);
    assert_eq!(p.skipped.len(), 2);
    assert!(
        p.skipped
            .iter()
            .any(|s| s.id == a.id && s.reason == SkipReason::NameTaken(b.id))
    );
    // Same id in another tenant here.
    a.tenant_id = Uuid::new_v4();
    let t = triage(&[a.clone()], &k).unwrap();
    let mut here = ours_of(&t.candidates[0]);
    here.tenant_id = Uuid::nil();
    let p = plan(t, &[here], &[]);
    assert_eq!(p.skipped[0].reason, SkipReason::OtherTenant(Uuid::nil()));
}

#[test]
fn pins_in_the_plan() {
    let k = key();
    let mut r = row(&k, "r");
    let c = triage(&[r.clone()], &k).unwrap().candidates;
    // We pinned on first use, upstream has none: written back, nothing else changes.
    let mut o = ours_of(&c[0]);
    o.fingerprint = Some(FP.into());
    let p = plan(triage(&[r.clone()], &k).unwrap(), &[o.clone()], &[]);
    assert_eq!(p.write_back, [(r.id, FP.to_string())]);
    assert_eq!(p.unchanged, 1);
    // Upstream now has it (ours, written back): remembered as seen.
    r.ssh_host_key_fingerprint = Some(FP.into());
    let p = plan(triage(&[r.clone()], &k).unwrap(), &[o.clone()], &[]);
    assert_eq!(p.seen, [(r.id, Some(FP.to_string()))]);
    assert!(p.write_back.is_empty());
    // An operator reset it upstream: ours goes too (an update that lifts a block).
    o.upstream_host_key = Some(FP.into());
    r.ssh_host_key_fingerprint = None;
    let p = plan(triage(&[r.clone()], &k).unwrap(), &[o.clone()], &[]);
    assert_eq!(p.updates.len(), 1);
    assert!(p.updates[0].pin_changed && p.updates[0].fingerprint.is_none());
    assert!(p.write_back.is_empty());
    // A new device with an upstream pin starts with it.
    let mut n = row(&k, "n");
    n.ssh_host_key_fingerprint = Some(FP2.into());
    let p = plan(triage(&[n], &k).unwrap(), &[], &[]);
    assert_eq!(p.inserts[0].fingerprint.as_deref(), Some(FP2));
    assert_eq!(p.inserts[0].seen_upstream.as_deref(), Some(FP2));
}

#[test]
fn the_summary_line() {
    let skip = |reason| Skipped {
        id: Uuid::nil(),
        tenant_id: Uuid::nil(),
        name: "x".into(),
        reason,
    };
    let mut r = SyncReport {
        inserted: 3,
        updated: 2,
        unchanged: 1199,
        removed: 1,
        skipped: vec![skip(SkipReason::Transit(Origin::Device)); 4],
        ..SyncReport::default()
    };
    assert_eq!(
        r.summary(),
        "synced 1,204 devices: 3 new, 2 updated, 1 removed, 4 skipped (transit credentials)"
    );
    r.skipped.push(skip(SkipReason::Unreadable(
        Origin::Profile,
        Unreadable::Decrypt,
    )));
    r.written_back = 2;
    assert_eq!(
        r.summary(),
        "synced 1,204 devices: 3 new, 2 updated, 1 removed, 5 skipped \
         (4 transit credentials, 1 unreadable credentials); 2 host keys written back"
    );
    assert_eq!(thousands(0), "0");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(1_000_000), "1,000,000");
}
