//! The model as RouterOS export text: quoting and escaping values, the logical line of an
//! item in each export variant (secrets left out unless `show-sensitive`, the path on
//! every line when `terse`), line wrapping, and the lengths the generator sizes a model
//! by. Apart from the generator (`config_gen`), which decides what a configuration holds,
//! so the text rules can be read, and changed, on their own.

use super::{Item, Model, RenderOpts};
use crate::render::{HARD_BREAK, wrap_line};

fn needs_quotes(v: &str) -> bool {
    v.is_empty()
        || v.chars().any(|c| {
            c.is_whitespace() || matches!(c, '"' | '\\' | ';' | '$' | '[' | ']' | '{' | '}' | '#')
        })
}

fn push_value(out: &mut String, v: &str) {
    if !needs_quotes(v) {
        out.push_str(v);
        return;
    }
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '$' => out.push_str("\\$"),
            '\n' => {
                out.push_str("\\r");
                out.push(HARD_BREAK);
                out.push_str("\\n");
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out.push('"');
}

fn logical_line(path: &str, it: &Item, opts: RenderOpts, note: Option<&str>) -> String {
    let mut line = String::new();
    if opts.terse {
        line.push('/');
        line.push_str(path);
        line.push(' ');
    }
    line.push_str(&it.verb);
    for prop in &it.props {
        if prop.secret && !opts.sensitive {
            continue;
        }
        line.push(' ');
        line.push_str(&prop.key);
        line.push('=');
        match note {
            Some(n) if prop.key == "note" => push_value(&mut line, n),
            _ => push_value(&mut line, &prop.value),
        }
    }
    line
}

pub(super) fn item_len(path: &str, it: &Item, opts: RenderOpts) -> usize {
    let mut out = String::new();
    wrap_line(&logical_line(path, it, opts, None), !opts.terse, &mut out);
    out.len() + 2
}

pub(super) fn body_len(model: &Model, opts: RenderOpts) -> usize {
    model
        .sections
        .iter()
        .filter(|s| !s.items.is_empty())
        .map(|s| {
            s.path.len()
                + 3
                + s.items
                    .iter()
                    .map(|i| item_len(&s.path, i, opts))
                    .sum::<usize>()
        })
        .sum()
}

/// Lines 2–5 of the export (software id, model, serial), without line ends.
pub fn model_meta(model: &Model) -> Vec<String> {
    let mut out = vec![
        format!("# software id = {}", model.software_id),
        "#".to_string(),
        format!("# model = {}", model.model),
    ];
    if let Some(serial) = &model.serial {
        out.push(format!("# serial number = {serial}"));
    }
    out
}

/// Renders the body as blocks: one per section header (default export) and one per item
/// (with its continuation lines); blocks have CRLF inside but not at the end.
///
/// `change`: replaces the `/system note` text with a counter (the `change` fault).
pub fn render_body(model: &Model, opts: RenderOpts, change: Option<u64>) -> Vec<String> {
    let note = change.map(|n| format!("Managed by NOC. Change counter {n}."));
    let mut blocks = Vec::new();
    for sec in &model.sections {
        if sec.items.is_empty() {
            continue;
        }
        if !opts.terse {
            blocks.push(format!("/{}", sec.path));
        }
        let is_note = sec.path == "system note";
        for it in &sec.items {
            let mut out = String::new();
            let line = logical_line(
                &sec.path,
                it,
                opts,
                if is_note { note.as_deref() } else { None },
            );
            wrap_line(&line, !opts.terse, &mut out);
            blocks.push(out);
        }
    }
    blocks
}
