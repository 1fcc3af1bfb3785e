//! The dependency rules of ARCHITECTURE.md ("Parts and the dependency rule"), checked on
//! the sources so they stay true: which part may depend on which, and no import circle
//! between the top-level modules of any crate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `rosbackup*` crates a part's Cargo.toml depends on (normal dependencies).
fn part_deps(manifest: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(manifest).expect("manifest");
    let mut deps = BTreeSet::new();
    let mut in_deps = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps && line.starts_with("rosbackup") {
            let name = line.split(['.', ' ', '=']).next().unwrap_or_default();
            deps.insert(name.to_string());
        }
    }
    deps
}

#[test]
fn parts_depend_one_way() {
    let r = root();
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    for (manifest, allowed) in [
        ("crates/core/Cargo.toml", set(&[])),
        ("crates/sim/Cargo.toml", set(&["rosbackup-core"])),
        ("crates/archive/Cargo.toml", set(&["rosbackup-core"])),
        (
            "crates/web/Cargo.toml",
            set(&["rosbackup-core", "rosbackup-archive"]),
        ),
        (
            "crates/harness/Cargo.toml",
            set(&["rosbackup-core", "rosbackup-sim"]),
        ),
    ] {
        let deps = part_deps(&r.join(manifest));
        assert!(
            deps.is_subset(&allowed),
            "{manifest} depends on {deps:?}; allowed: {allowed:?}"
        );
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `crate::x` (and `super::x` from a crate's top-level files) outside comments and the
/// unit-test module.
fn imports(src: &str, top_level: bool) -> BTreeSet<String> {
    let code = src.split("#[cfg(test)]").next().unwrap_or(src);
    let mut found = BTreeSet::new();
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        let prefixes: &[&str] = if top_level {
            &["crate::", "super::"]
        } else {
            &["crate::"]
        };
        for prefix in prefixes {
            for (i, _) in line.match_indices(prefix) {
                let rest = &line[i + prefix.len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        }
    }
    found
}

fn cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut c = path[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for n in edges.keys() {
        if let Some(c) = visit(n, edges, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn no_import_circle_between_the_modules_of_any_crate() {
    let r = root();
    for src in [
        "crates/core/src",
        "crates/sim/src",
        "crates/archive/src",
        "crates/web/src",
        "crates/harness/src",
        "src",
    ] {
        let dir = r.join(src);
        let mut files = vec![];
        rust_files(&dir, &mut files);
        let module = |p: &Path| -> Option<String> {
            let rel = p.strip_prefix(&dir).ok()?;
            let first = rel.components().next()?.as_os_str().to_str()?;
            let m = first.trim_end_matches(".rs").to_string();
            (!matches!(m.as_str(), "lib" | "main" | "bin")).then_some(m)
        };
        let mods: BTreeSet<String> = files.iter().filter_map(|p| module(p)).collect();
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for f in &files {
            let Some(m) = module(f) else { continue };
            let rel = f.strip_prefix(&dir).expect("under dir");
            let top_level = rel.components().count() == 1 || rel.ends_with("mod.rs");
            let text = std::fs::read_to_string(f).expect("source");
            let deps: Vec<String> = imports(&text, top_level)
                .into_iter()
                .filter(|d| mods.contains(d) && *d != m)
                .collect();
            edges.entry(m).or_default().extend(deps);
        }
        assert!(mods.len() > 1, "{src}: no modules found");
        if let Some(c) = cycle(&edges) {
            panic!("{src}: import circle {}", c.join(" -> "));
        }
    }
}

#[test]
fn the_cycle_check_finds_a_circle() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    edges.entry("a".into()).or_default().insert("b".into());
    edges.entry("b".into()).or_default().insert("c".into());
    assert_eq!(cycle(&edges), None);
    edges.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        cycle(&edges),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(
        imports(
            "use crate::store::X;\n// crate::web\nfn f() { super::queue::y() }",
            true
        ),
        ["queue".to_string(), "store".to_string()]
            .into_iter()
            .collect()
    );
}
