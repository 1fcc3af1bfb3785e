//! Our own generator of realistic RouterOS configurations.
//!
//! Configurations are a small structured model (menu sections → items → properties, each
//! property flagged secret or not) rather than text, so one model renders every export
//! variant (`/export`, `show-sensitive`, `hide-sensitive`, `terse`) consistently, and a
//! secret can never leak into a hidden export by a text-substitution mistake. Everything
//! derives from `(seed, device index)`, so a restarted simulator serves byte-identical
//! bodies.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod text;

use text::{body_len, item_len};
pub use text::{model_meta, render_body};

/// One `key=value` property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prop {
    pub key: String,
    pub value: String,
    /// Shown only by sensitive exports.
    pub secret: bool,
}

/// One command line in a menu (`add …`, `set [ find default-name=ether1 ] …`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub verb: String,
    pub props: Vec<Prop>,
}

/// A menu section such as `/ip firewall filter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Menu path without the leading slash.
    pub path: String,
    pub items: Vec<Item>,
    /// Kept even when the size target is tiny.
    pub essential: bool,
}

/// A whole device configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    pub version: String,
    pub software_id: String,
    pub model: String,
    pub serial: Option<String>,
    pub sections: Vec<Section>,
}

/// Which export variant to render.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RenderOpts {
    pub terse: bool,
    pub sensitive: bool,
}

/// Deterministic RNG for `(seed, index, purpose)`.
pub fn rng_for(seed: u64, index: usize, purpose: u64) -> StdRng {
    // splitmix-style mixing so neighbouring indices give unrelated streams.
    let mut z = seed
        ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ purpose.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

/// Realistic default size for a device: 1 KB..1 MB, mostly 5–60 KB.
pub fn default_size(seed: u64, index: usize) -> usize {
    let mut rng = rng_for(seed, index, 7);
    let roll: f64 = rng.r#gen();
    let (lo, hi): (f64, f64) = if roll < 0.08 {
        (1_000.0, 5_000.0)
    } else if roll < 0.90 {
        (5_000.0, 60_000.0)
    } else if roll < 0.98 {
        (60_000.0, 300_000.0)
    } else {
        (300_000.0, 1_000_000.0)
    };
    let x: f64 = rng.gen_range(lo.ln()..hi.ln());
    x.exp() as usize
}

fn p(key: &str, value: impl Into<String>) -> Prop {
    Prop {
        key: key.to_string(),
        value: value.into(),
        secret: false,
    }
}

fn s(key: &str, value: impl Into<String>) -> Prop {
    Prop {
        key: key.to_string(),
        value: value.into(),
        secret: true,
    }
}

fn item(verb: &str, props: Vec<Prop>) -> Item {
    Item {
        verb: verb.to_string(),
        props,
    }
}

/// Random letters/digits (no look-alikes) from a seeded generator.
pub fn alnum(rng: &mut StdRng, n: usize) -> String {
    const A: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    (0..n)
        .map(|_| A[rng.gen_range(0..A.len())] as char)
        .collect()
}

fn mac(rng: &mut StdRng) -> String {
    let b: [u8; 3] = rng.r#gen();
    format!("48:A9:8A:{:02X}:{:02X}:{:02X}", b[0], b[1], b[2])
}

const MODELS: &[(&str, usize)] = &[
    ("RB5009UG+S+", 8),
    ("CCR2004-16G-2S+", 16),
    ("RB4011iGS+", 10),
    ("RBD52G-5HacD2HnD", 5),
    ("CRS326-24G-2S+", 24),
    ("RB760iGS", 5),
    ("C52iG-5HaxD2HaxD", 5),
    ("CHR", 4),
];

const COMMENT_WORDS: &[&str] = &[
    "office",
    "branch",
    "uplink",
    "backup",
    "vpn",
    "customer",
    "guest",
    "cameras",
    "voip",
    "printer",
    "monitoring",
    "legacy",
    "temporary",
    "ticket",
    "allow",
    "block",
    "partner",
];

fn comment(rng: &mut StdRng) -> String {
    let n = rng.gen_range(1..4);
    let words: Vec<&str> = (0..n)
        .map(|_| COMMENT_WORDS[rng.gen_range(0..COMMENT_WORDS.len())])
        .collect();
    format!("{} #{}", words.join(" "), rng.gen_range(100..9999))
}

/// Kinds of items used to grow a config towards a size target.
#[derive(Clone, Copy)]
enum Filler {
    AddressList,
    Filter,
    Route,
    DnsStatic,
    Mangle,
}

fn filler_item(rng: &mut StdRng, kind: Filler, n: usize) -> (&'static str, Item) {
    match kind {
        Filler::AddressList => {
            let lists = [
                "blocklist",
                "allowed-mgmt",
                "customers",
                "bogons",
                "partners",
            ];
            let mut props = vec![p(
                "address",
                format!(
                    "{}.{}.{}.{}{}",
                    rng.gen_range(1..224),
                    rng.gen_range(0..256),
                    rng.gen_range(0..256),
                    rng.gen_range(0..256),
                    if rng.gen_bool(0.3) { "/24" } else { "" }
                ),
            )];
            if rng.gen_bool(0.25) {
                props.push(p("comment", comment(rng)));
            }
            props.push(p("list", lists[n % lists.len()]));
            ("ip firewall address-list", item("add", props))
        }
        Filler::Filter => {
            let chains = ["input", "forward", "output"];
            let actions = ["accept", "drop", "reject", "jump", "log"];
            let action = actions[rng.gen_range(0..actions.len())];
            let mut props = vec![p("action", action)];
            props.push(p("chain", chains[rng.gen_range(0..chains.len())]));
            props.push(p("comment", comment(rng)));
            if rng.gen_bool(0.5) {
                props.push(p("dst-port", format!("{}", rng.gen_range(1..65535))));
            }
            if action == "jump" {
                props.push(p("jump-target", "custom-chain"));
            }
            if action == "log" {
                props.push(p("log-prefix", format!("FW{n}")));
            }
            props.push(p("protocol", if rng.gen_bool(0.6) { "tcp" } else { "udp" }));
            props.push(p(
                "src-address-list",
                if rng.gen_bool(0.5) {
                    "customers"
                } else {
                    "allowed-mgmt"
                },
            ));
            ("ip firewall filter", item("add", props))
        }
        Filler::Route => (
            "ip route",
            item(
                "add",
                vec![
                    p("comment", comment(rng)),
                    p("disabled", "no"),
                    p("distance", format!("{}", rng.gen_range(1..20))),
                    p(
                        "dst-address",
                        format!(
                            "10.{}.{}.0/24",
                            rng.gen_range(0..256),
                            rng.gen_range(0..256)
                        ),
                    ),
                    p("gateway", format!("172.16.{}.1", rng.gen_range(0..256))),
                    p("routing-table", "main"),
                ],
            ),
        ),
        Filler::DnsStatic => (
            "ip dns static",
            item(
                "add",
                vec![
                    p(
                        "address",
                        format!(
                            "192.168.{}.{}",
                            rng.gen_range(0..256),
                            rng.gen_range(1..255)
                        ),
                    ),
                    p("name", format!("host{n}.example.lan")),
                    p("ttl", "1h"),
                ],
            ),
        ),
        Filler::Mangle => (
            "ip firewall mangle",
            item(
                "add",
                vec![
                    p("action", "mark-connection"),
                    p("chain", "prerouting"),
                    p("comment", comment(rng)),
                    p("dst-address-list", "customers"),
                    p("new-connection-mark", format!("conn-{}", n % 50)),
                    p("passthrough", "yes"),
                ],
            ),
        ),
    }
}

/// Generates the configuration of device `index`. `target` is the approximate size in
/// bytes of its plain `/export` (header included).
pub fn generate(seed: u64, index: usize, version: &str, identity: &str, target: usize) -> Model {
    let mut rng = rng_for(seed, index, 1);
    let v7 = !super::render::is_v6(version);
    let (model_name, ports) = MODELS[rng.gen_range(0..MODELS.len())];
    let software_id = format!("{}-{}", alnum(&mut rng, 4), alnum(&mut rng, 4)).to_uppercase();
    let serial = if model_name == "CHR" {
        None
    } else {
        Some(format!("HD{:09X}", rng.gen_range(0u64..0xF_FFFF_FFFF)))
    };
    let lan = rng.gen_range(0..250u32);
    let mut secs: Vec<Section> = Vec::new();
    let mut sec = |path: &str, essential: bool, items: Vec<Item>| {
        secs.push(Section {
            path: path.to_string(),
            items,
            essential,
        })
    };

    sec(
        "interface bridge",
        true,
        vec![item(
            "add",
            vec![
                p("admin-mac", mac(&mut rng)),
                p("auto-mac", "no"),
                p("comment", "defconf"),
                p("name", "bridge1"),
            ],
        )],
    );
    let mut eth = Vec::new();
    for i in 1..=ports.min(8) {
        if rng.gen_bool(0.4) {
            let mut props = vec![];
            if i == 1 {
                props.push(p("comment", "WAN uplink"));
            }
            props.push(p("l2mtu", "1592"));
            eth.push(item(&format!("set [ find default-name=ether{i} ]"), props));
        }
    }
    if !eth.is_empty() {
        sec("interface ethernet", false, eth);
    }
    let vlans: Vec<u32> = (0..rng.gen_range(1..5)).map(|i| 10 + i * 10).collect();
    sec(
        "interface vlan",
        true,
        vlans
            .iter()
            .map(|v| {
                item(
                    "add",
                    vec![
                        p("interface", "bridge1"),
                        p("name", format!("vlan{v}")),
                        p("vlan-id", v.to_string()),
                    ],
                )
            })
            .collect(),
    );
    if v7 {
        sec(
            "interface wireguard",
            false,
            vec![item(
                "add",
                vec![
                    p("listen-port", "13231"),
                    p("mtu", "1420"),
                    p("name", "wg-mgmt"),
                    s("private-key", format!("{}=", alnum(&mut rng, 43))),
                ],
            )],
        );
    }
    sec(
        "interface list",
        false,
        vec![
            item("add", vec![p("comment", "defconf"), p("name", "WAN")]),
            item("add", vec![p("comment", "defconf"), p("name", "LAN")]),
        ],
    );
    let ssid = format!("Office-{}", alnum(&mut rng, 4));
    let psk = alnum(&mut rng, 16);
    if v7 && version_ge(version, 7, 13) {
        sec(
            "interface wifi security",
            false,
            vec![item(
                "add",
                vec![
                    p("authentication-types", "wpa2-psk,wpa3-psk"),
                    p("name", "sec-office"),
                    s("passphrase", psk),
                ],
            )],
        );
    } else {
        sec(
            "interface wireless security-profiles",
            false,
            vec![
                item(
                    "set",
                    vec![p("[ find default=yes ] supplicant-identity", "MikroTik")],
                ),
                item(
                    "add",
                    vec![
                        p("authentication-types", "wpa2-psk"),
                        p("mode", "dynamic-keys"),
                        p("name", "office"),
                        p("supplicant-identity", "MikroTik"),
                        s("wpa2-pre-shared-key", psk),
                    ],
                ),
            ],
        );
    }
    if v7 && version_ge(version, 7, 13) {
        sec(
            "interface wifi",
            false,
            vec![item(
                "set [ find default-name=wifi1 ]",
                vec![
                    p("configuration.mode", "ap"),
                    p("configuration.ssid", ssid),
                    p("disabled", "no"),
                    p("security", "sec-office"),
                ],
            )],
        );
    } else {
        sec(
            "interface wireless",
            false,
            vec![item(
                "set [ find default-name=wlan1 ]",
                vec![
                    p("band", "2ghz-b/g/n"),
                    p("disabled", "no"),
                    p("mode", "ap-bridge"),
                    p("security-profile", "office"),
                    p("ssid", ssid),
                ],
            )],
        );
    }
    sec(
        "ip pool",
        true,
        vec![item(
            "add",
            vec![
                p("name", "dhcp_pool0"),
                p("ranges", format!("10.{lan}.0.10-10.{lan}.0.254")),
            ],
        )],
    );
    sec(
        "ip dhcp-server",
        false,
        vec![item(
            "add",
            vec![
                p("address-pool", "dhcp_pool0"),
                p("interface", "bridge1"),
                p("lease-time", "1d"),
                p("name", "dhcp1"),
            ],
        )],
    );
    sec(
        "ppp profile",
        false,
        vec![item(
            "add",
            vec![
                p("local-address", format!("10.{lan}.250.1")),
                p("name", "vpn-users"),
                p("remote-address", "dhcp_pool0"),
            ],
        )],
    );
    let mut bports = Vec::new();
    for i in 2..=ports.min(8) {
        bports.push(item(
            "add",
            vec![
                p("bridge", "bridge1"),
                p("comment", "defconf"),
                p("interface", format!("ether{i}")),
            ],
        ));
    }
    if !bports.is_empty() {
        sec("interface bridge port", false, bports);
    }
    sec(
        "interface list member",
        false,
        vec![
            item(
                "add",
                vec![
                    p("comment", "defconf"),
                    p("interface", "bridge1"),
                    p("list", "LAN"),
                ],
            ),
            item(
                "add",
                vec![
                    p("comment", "defconf"),
                    p("interface", "ether1"),
                    p("list", "WAN"),
                ],
            ),
        ],
    );
    let mut addrs = vec![item(
        "add",
        vec![
            p("address", format!("10.{lan}.0.1/24")),
            p("comment", "defconf"),
            p("interface", "bridge1"),
            p("network", format!("10.{lan}.0.0")),
        ],
    )];
    for v in &vlans {
        addrs.push(item(
            "add",
            vec![
                p("address", format!("10.{lan}.{v}.1/24")),
                p("interface", format!("vlan{v}")),
                p("network", format!("10.{lan}.{v}.0")),
            ],
        ));
    }
    sec("ip address", true, addrs);
    sec(
        "ip dhcp-client",
        false,
        vec![item(
            "add",
            vec![p("comment", "defconf"), p("interface", "ether1")],
        )],
    );
    sec(
        "ip dhcp-server network",
        false,
        vec![item(
            "add",
            vec![
                p("address", format!("10.{lan}.0.0/24")),
                p("comment", "defconf"),
                p("dns-server", format!("10.{lan}.0.1")),
                p("gateway", format!("10.{lan}.0.1")),
            ],
        )],
    );
    sec(
        "ip dns",
        true,
        vec![item(
            "set",
            vec![
                p("allow-remote-requests", "yes"),
                p("servers", "1.1.1.1,9.9.9.9"),
            ],
        )],
    );
    sec("ip dns static", false, Vec::new());
    sec("ip firewall address-list", false, Vec::new());
    sec(
        "ip firewall filter",
        false,
        vec![
            item(
                "add",
                vec![
                    p("action", "accept"),
                    p("chain", "input"),
                    p("comment", "defconf: accept established,related,untracked"),
                    p("connection-state", "established,related,untracked"),
                ],
            ),
            item(
                "add",
                vec![
                    p("action", "drop"),
                    p("chain", "input"),
                    p("comment", "defconf: drop invalid"),
                    p("connection-state", "invalid"),
                ],
            ),
            item(
                "add",
                vec![
                    p("action", "drop"),
                    p("chain", "input"),
                    p("comment", "defconf: drop all not coming from LAN"),
                    p("in-interface-list", "!LAN"),
                ],
            ),
        ],
    );
    sec("ip firewall mangle", false, Vec::new());
    sec(
        "ip firewall nat",
        false,
        vec![item(
            "add",
            vec![
                p("action", "masquerade"),
                p("chain", "srcnat"),
                p("comment", "defconf: masquerade"),
                p("ipsec-policy", "out,none"),
                p("out-interface-list", "WAN"),
            ],
        )],
    );
    sec(
        "ip ipsec identity",
        false,
        vec![item(
            "add",
            vec![p("peer", "hq"), s("secret", alnum(&mut rng, 20))],
        )],
    );
    sec(
        "ip ipsec peer",
        false,
        vec![item(
            "add",
            vec![
                p("address", format!("203.0.113.{}/32", rng.gen_range(1..255))),
                p("name", "hq"),
            ],
        )],
    );
    sec(
        "ip route",
        true,
        vec![item(
            "add",
            vec![
                p("disabled", "no"),
                p("dst-address", "0.0.0.0/0"),
                p("gateway", format!("198.51.100.{}", rng.gen_range(1..255))),
            ],
        )],
    );
    sec(
        "ip service",
        false,
        vec![
            item("set", vec![p("telnet disabled", "yes")]),
            item("set", vec![p("ftp disabled", "yes")]),
            item("set", vec![p("www disabled", "yes")]),
            item("set", vec![p("api disabled", "yes")]),
        ],
    );
    let ppp: Vec<Item> = (0..rng.gen_range(1..4))
        .map(|i| {
            item(
                "add",
                vec![
                    p("name", format!("vpnuser{i}")),
                    s("password", alnum(&mut rng, 12)),
                    p("profile", "vpn-users"),
                    p("service", "l2tp"),
                ],
            )
        })
        .collect();
    sec("ppp secret", false, ppp);
    sec(
        "snmp community",
        false,
        vec![item(
            "add",
            vec![
                p("addresses", "10.0.0.0/8"),
                s("authentication-password", alnum(&mut rng, 14)),
                p("authentication-protocol", "SHA1"),
                s("encryption-password", alnum(&mut rng, 14)),
                p("encryption-protocol", "AES"),
                p("name", "monitoring"),
                p("security", "private"),
            ],
        )],
    );
    sec(
        "snmp",
        false,
        vec![item(
            "set",
            vec![
                p("contact", "noc@example.net"),
                p("enabled", "yes"),
                p("location", format!("Rack {}", rng.gen_range(1..40))),
            ],
        )],
    );
    sec(
        "system clock",
        true,
        vec![item("set", vec![p("time-zone-name", "Europe/Berlin")])],
    );
    sec(
        "system identity",
        true,
        vec![item("set", vec![p("name", identity)])],
    );
    sec(
        "system note",
        true,
        vec![item(
            "set",
            vec![
                p("note", "Managed by NOC. Changes need a ticket."),
                p("show-at-login", "no"),
            ],
        )],
    );
    if v7 {
        sec(
            "system ntp client",
            false,
            vec![item("set", vec![p("enabled", "yes")])],
        );
        sec(
            "system ntp client servers",
            false,
            vec![item("add", vec![p("address", "pool.ntp.org")])],
        );
    } else {
        sec(
            "system ntp client",
            false,
            vec![item(
                "set",
                vec![p("enabled", "yes"), p("server-dns-names", "pool.ntp.org")],
            )],
        );
    }
    sec(
        "system scheduler",
        false,
        vec![item(
            "add",
            vec![
                p("interval", "1d"),
                p("name", "nightly-backup"),
                p("on-event", "backup"),
                p(
                    "policy",
                    "ftp,reboot,read,write,policy,test,password,sniff,sensitive,romon",
                ),
                p("start-date", "2024-01-01"),
                p("start-time", "03:00:00"),
            ],
        )],
    );
    let source = format!(
        ":local name [/system identity get name]\n:log info (\"backup of \" . $name)\n\
         /system backup save name=$name dont-encrypt=yes\n:delay {}s\n\
         :foreach i in=[/file find where name~\"old\"] do={{ /file remove $i }}\n",
        rng.gen_range(1..30)
    );
    sec(
        "system script",
        false,
        vec![item(
            "add",
            vec![
                p("dont-require-permissions", "no"),
                p("name", "backup"),
                p("owner", "admin"),
                p(
                    "policy",
                    "ftp,reboot,read,write,policy,test,password,sniff,sensitive,romon",
                ),
                p("source", source),
            ],
        )],
    );
    sec(
        "tool netwatch",
        false,
        vec![item(
            "add",
            vec![
                p("comment", "uplink check"),
                p("host", "1.1.1.1"),
                p("interval", "30s"),
            ],
        )],
    );
    sec(
        "user group",
        false,
        vec![item(
            "add",
            vec![
                p("name", "backup"),
                p(
                    "policy",
                    "ssh,read,sensitive,!local,!telnet,!ftp,!reboot,!write,!policy,!test,!winbox,!password,!web,!sniff,!api,!romon,!rest-api",
                ),
            ],
        )],
    );
    sec(
        "user",
        false,
        vec![item(
            "add",
            vec![p("group", "backup"), p("name", "rosbackup")],
        )],
    );

    let mut model = Model {
        version: version.to_string(),
        software_id,
        model: model_name.to_string(),
        serial,
        sections: secs,
    };

    // Shrink to the target by dropping optional sections from the end, then grow with
    // filler items (address lists, firewall rules, …).
    let opts = RenderOpts::default();
    let header_len = 36 + version.len();
    let base = header_len
        + model_meta(&model)
            .iter()
            .map(|l| l.len() + 2)
            .sum::<usize>();
    let mut size = base + body_len(&model, opts);
    while size > target {
        if let Some(pos) = model
            .sections
            .iter()
            .rposition(|s| !s.essential && !s.items.is_empty())
        {
            model.sections.remove(pos);
        } else if let Some(sec) = model
            .sections
            .iter_mut()
            .filter(|s| s.items.len() > 1)
            .max_by_key(|s| s.items.len())
        {
            sec.items.pop();
        } else {
            break;
        }
        size = base + body_len(&model, opts);
    }
    let kinds = [
        (Filler::AddressList, 55u32),
        (Filler::Filter, 25),
        (Filler::Route, 8),
        (Filler::DnsStatic, 7),
        (Filler::Mangle, 5),
    ];
    let mut n = 0usize;
    let mut only_small = false;
    while size < target {
        let roll = if only_small {
            0
        } else {
            rng.gen_range(0..100u32)
        };
        let mut acc = 0;
        let mut kind = Filler::AddressList;
        for (k, w) in kinds {
            acc += w;
            if roll < acc {
                kind = k;
                break;
            }
        }
        let (path, it) = filler_item(&mut rng, kind, n);
        n += 1;
        let new_section = !model
            .sections
            .iter()
            .any(|s| s.path == path && !s.items.is_empty());
        let add = item_len(path, &it, opts) + if new_section { path.len() + 3 } else { 0 };
        if size + add > target {
            if !only_small {
                // Close the last gap with small address-list entries.
                only_small = true;
                continue;
            }
            if size + add - target >= target - size {
                break;
            }
        }
        let idx = match model.sections.iter().position(|s| s.path == path) {
            Some(i) => i,
            None => {
                // Insert in a plausible position: before `ip route` or at the end.
                let at = model
                    .sections
                    .iter()
                    .position(|s| s.path.as_str() > path && s.path.starts_with("ip "))
                    .unwrap_or(model.sections.len());
                model.sections.insert(
                    at,
                    Section {
                        path: path.to_string(),
                        items: Vec::new(),
                        essential: false,
                    },
                );
                at
            }
        };
        model.sections[idx].items.push(it);
        size += add;
    }
    model.sections.retain(|s| !s.items.is_empty());
    model
}

fn version_ge(version: &str, major: u32, minor: u32) -> bool {
    super::render::version_major_minor(version) >= (major, minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_secrets_hidden() {
        let a = generate(7, 3, "7.15.3", "sim-0003", 20_000);
        let b = generate(7, 3, "7.15.3", "sim-0003", 20_000);
        assert_eq!(a, b);
        let c = generate(7, 4, "7.15.3", "sim-0004", 20_000);
        assert_ne!(a, c);
        let hidden = render_body(&a, RenderOpts::default(), None).join("\r\n");
        let shown = render_body(
            &a,
            RenderOpts {
                terse: false,
                sensitive: true,
            },
            None,
        )
        .join("\r\n");
        assert!(!hidden.contains("private-key="));
        assert!(!hidden.contains("passphrase="));
        assert!(shown.contains("private-key="));
        assert!(shown.contains("passphrase="));
        assert!(shown.len() > hidden.len());
        let terse = render_body(
            &a,
            RenderOpts {
                terse: true,
                sensitive: false,
            },
            None,
        );
        for b in &terse {
            assert!(b.starts_with('/'), "{b}");
        }
    }

    #[test]
    fn size_targets() {
        let mut cases: Vec<(usize, usize, &str)> = Vec::new();
        for i in 0..40 {
            for t in [1_000usize, 1_500, 2_500, 8_000] {
                cases.push((i, t, if i % 3 == 0 { "6.49.10" } else { "7.16" }));
            }
        }
        cases.push((1, 50_000, "7.16"));
        cases.push((2, 400_000, "7.8"));
        for (i, target, version) in cases {
            let m = generate(1, i, version, "sim-x", target);
            let mut body = format!("# 2024-01-01 00:00:00 by RouterOS {version}\r\n");
            for l in model_meta(&m) {
                body.push_str(&l);
                body.push_str("\r\n");
            }
            for b in render_body(&m, RenderOpts::default(), None) {
                body.push_str(&b);
                body.push_str("\r\n");
            }
            let got = body.len() as f64;
            let err = (got - target as f64).abs() / target as f64;
            assert!(
                err <= 0.05,
                "device {i} {version} target {target}: got {got}"
            );
        }
        let sizes: Vec<usize> = (0..200).map(|i| default_size(5, i)).collect();
        assert!(sizes.iter().all(|s| (1_000..=1_000_000).contains(s)));
        let mid = sizes
            .iter()
            .filter(|s| (5_000..=60_000).contains(*s))
            .count();
        assert!(mid > 140, "{mid}");
    }
}
