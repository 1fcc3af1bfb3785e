//! Diffs between two normalized configs, and which RouterOS menus they touch.
//!
//! Both sides are normalized (v2) text, so a header timestamp or a runtime annotation never
//! shows up as a change. The unified diff is `similar`'s line diff (Myers) with a deadline:
//! two huge, completely different exports fall back to a coarser (still correct) diff
//! instead of burning a core.
//!
//! **Menus.** A RouterOS export is a sequence of sections, each opened by a line starting
//! with `/` (`/ip firewall filter`) followed by `add …`/`set …` lines; terse exports put the
//! menu on every line (`/ip firewall nat add …`); long lines continue after a trailing ` \`
//! (indented). Every line is attributed to the menu of the section it falls under: the
//! path tokens of the last `/` line up to the first command verb or `key=value` token. A
//! line before the first section (the `# model = …` comments) belongs to `(header)`.

use similar::{ChangeTag, TextDiff};
use std::time::Duration;

/// Lines before the first `/` section.
pub const HEADER_MENU: &str = "(header)";

/// What changed between two texts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiffSummary {
    /// Menus with a changed line, in the order they first appear in the diff.
    pub menus: Vec<String>,
    pub added: usize,
    pub removed: usize,
}

/// A unified diff (3 lines of context) from `old` to `new`, labelled with the two names.
/// Empty when the texts are equal.
pub fn unified(old: &str, new: &str, old_label: &str, new_label: &str) -> String {
    if old == new {
        return String::new();
    }
    text_diff(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_label, new_label)
        .to_string()
}

/// Menus touched and lines added/removed between `old` and `new`.
pub fn summarize(old: &str, new: &str) -> DiffSummary {
    let mut out = DiffSummary::default();
    if old == new {
        return out;
    }
    let old_menus = line_menus(old);
    let new_menus = line_menus(new);
    let diff = text_diff(old, new);
    for change in diff.iter_all_changes() {
        let menu = match change.tag() {
            ChangeTag::Equal => continue,
            ChangeTag::Delete => {
                out.removed += 1;
                change.old_index().and_then(|i| old_menus.get(i))
            }
            ChangeTag::Insert => {
                out.added += 1;
                change.new_index().and_then(|i| new_menus.get(i))
            }
        };
        let menu = menu.map_or(HEADER_MENU, String::as_str);
        if !out.menus.iter().any(|m| m == menu) {
            out.menus.push(menu.to_string());
        }
    }
    out
}

fn text_diff<'a>(old: &'a str, new: &'a str) -> TextDiff<'a, 'a, 'a, str> {
    TextDiff::configure()
        .algorithm(similar::Algorithm::Myers)
        .timeout(Duration::from_secs(2))
        .diff_lines(old, new)
}

/// The menu of every line of `text` (indexed like `similar`'s line indices).
pub fn line_menus(text: &str) -> Vec<String> {
    let mut current = HEADER_MENU.to_string();
    let mut continued = false;
    let mut out = Vec::new();
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        if !continued && body.starts_with('/') {
            current = menu_of(body);
        }
        out.push(current.clone());
        continued = body.ends_with('\\');
    }
    out
}

/// Command verbs that end a menu path (`/ip address add …`, `/system identity set …`).
const VERBS: &[&str] = &[
    "add", "set", "remove", "unset", "enable", "disable", "move", "comment", "edit", "print",
    "export", "reset", "run", "start", "stop", "find", "get", "import", "monitor",
];

/// The menu path of a `/` line: its tokens up to the first verb, `key=value`, `[`, quote or
/// continuation.
pub fn menu_of(line: &str) -> String {
    let rest = line.trim_start_matches('/');
    let mut path = Vec::new();
    for token in rest.split_whitespace() {
        let is_path = token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            && !VERBS.contains(&token);
        if !is_path {
            break;
        }
        path.push(token);
    }
    format!("/{}", path.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn menus_of_sections_terse_lines_and_continuations() {
        assert_eq!(menu_of("/ip firewall filter"), "/ip firewall filter");
        assert_eq!(
            menu_of("/ip firewall nat add action=masquerade chain=srcnat"),
            "/ip firewall nat"
        );
        assert_eq!(menu_of("/system identity set name=x"), "/system identity");
        assert_eq!(menu_of("/interface bridge"), "/interface bridge");
        let old = "# model = RB5009\n/interface bridge\nadd name=br1\n/ip firewall filter\nadd chain=input \\\n    action=accept comment=\"/x\"\nadd chain=forward\n";
        let new = "# model = RB5009UG\n/interface bridge\nadd name=br1\nadd name=br2\n/ip firewall filter\nadd chain=input \\\n    action=drop comment=\"/x\"\nadd chain=forward\n";
        let s = summarize(old, new);
        assert_eq!(
            s.menus,
            ["(header)", "/interface bridge", "/ip firewall filter"]
        );
        assert_eq!((s.added, s.removed), (3, 2));
        let u = unified(old, new, "a", "b");
        assert!(u.starts_with("--- a\n+++ b\n"), "{u}");
        assert!(u.contains("+add name=br2\n"));
        assert_eq!(summarize(old, old), DiffSummary::default());
        assert_eq!(unified(old, old, "a", "b"), "");
    }
}
