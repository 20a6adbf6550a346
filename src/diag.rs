//! Load-time diagnostics: every problem in a file, as `FILE:LINE[:COL]: message`.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub column: Option<usize>,
    pub message: String,
}

impl Diagnostic {
    pub fn new(file: impl Into<PathBuf>, line: usize, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.into(),
            line,
            column: None,
            message: message.into(),
        }
    }

    pub fn at(
        file: impl Into<PathBuf>,
        line: usize,
        column: usize,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            file: file.into(),
            line,
            column: Some(column),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.column {
            _ if self.line == 0 => write!(f, "{}: {}", self.file.display(), self.message),
            Some(c) => write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                c,
                self.message
            ),
            None => write!(f, "{}:{}: {}", self.file.display(), self.line, self.message),
        }
    }
}

/// Largest YAML file read (configuration, policies, latency table, scenario): far
/// above any real one (10 000 policies are ~2 MB), and a bound on what a mistaken path
/// (a log, a database) costs to reject.
pub const MAX_YAML_BYTES: u64 = 16 * 1024 * 1024;

/// Reads a YAML file whole, refusing one over `MAX_YAML_BYTES` before reading it.
pub fn read_yaml(file: &Path) -> Result<String, Diagnostic> {
    let size = std::fs::metadata(file)
        .map_err(|e| Diagnostic::new(file, 0, format!("cannot read: {e}")))?
        .len();
    if size > MAX_YAML_BYTES {
        return Err(Diagnostic::new(
            file,
            0,
            format!(
                "{size} bytes: larger than the {} MiB a YAML file may be",
                MAX_YAML_BYTES / (1024 * 1024)
            ),
        ));
    }
    std::fs::read_to_string(file).map_err(|e| Diagnostic::new(file, 0, format!("cannot read: {e}")))
}

/// Parses one YAML file into `T`, turning saphyr's error into a diagnostic.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(
    file: &Path,
    text: &str,
) -> Result<T, Diagnostic> {
    serde_saphyr::from_str(text).map_err(|e| {
        let (line, col) = e
            .location()
            .map(|l| (l.line() as usize, l.column() as usize))
            .unwrap_or((0, 0));
        let msg = e.to_string();
        Diagnostic::at(
            file,
            line,
            col,
            msg.lines().next().unwrap_or("invalid YAML").to_string(),
        )
    })
}

/// Most mistakes `parse_yaml_all` reports in one file before giving up on the rest.
const MAX_SCHEMA_ERRORS: usize = 100;

/// Parses one YAML file into `T`, reporting every unknown key and every value of the
/// wrong type instead of stopping at the first: each is reported at its position and
/// its entry (the key with everything under it) is left out, then the rest is read
/// again. Returns the value read without the bad entries, with the errors found on the
/// way, so the caller's own validation of what remains reports its mistakes alongside;
/// `Err` when the file cannot be read past a mistake (YAML syntax, a required key
/// missing).
///
/// serde stops at the first error of a document and saphyr reports one position, so
/// this re-reads with the entry blanked (its lines kept as empty lines, so every
/// position stays true): a file without mistakes is read once.
pub fn parse_yaml_all<T: serde::de::DeserializeOwned>(
    file: &Path,
    text: &str,
) -> Result<(T, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut errors: Vec<Diagnostic> = Vec::new();
    let mut left_out: Vec<String> = Vec::new();
    loop {
        let e = match serde_saphyr::from_str::<T>(&lines.join("\n")) {
            Ok(v) => return Ok((v, errors)),
            Err(e) => e,
        };
        let message = e.to_string();
        let message = without_position(message.lines().next().unwrap_or("invalid YAML"));
        let message = message.to_string();
        let (line, col) = e
            .location()
            .map(|l| (l.line() as usize, l.column() as usize))
            .unwrap_or((0, 0));
        // A required key left out for its own mistake: already reported.
        let consequence = left_out
            .iter()
            .any(|k| message.contains(&format!("missing field `{k}`")));
        if !consequence {
            errors.push(Diagnostic::at(file, line, col, message.clone()));
        }
        let entry = (errors.len() < MAX_SCHEMA_ERRORS)
            .then(|| schema_entry(&lines, line, col, &message))
            .flatten();
        let Some(entry) = entry else {
            return Err(errors);
        };
        if let Some(key) = lines.get(entry.first).and_then(|l| entry_key(l)) {
            left_out.push(key.to_string());
        }
        for (i, l) in lines
            .iter_mut()
            .enumerate()
            .take(entry.last + 1)
            .skip(entry.first)
        {
            let keep = if i == entry.first { entry.keep } else { 0 };
            l.truncate(keep);
        }
        // A section left with nothing under it would read as `null`: it goes too, as
        // if it had not been written.
        let mut child = entry.first;
        while let Some(owner) = emptied_owner(&lines, child) {
            if let Some(key) = lines.get(owner).and_then(|l| entry_key(l)) {
                left_out.push(key.to_string());
            }
            if let Some(l) = lines.get_mut(owner) {
                l.clear();
            }
            child = owner;
        }
    }
}

/// The key line owning line `child` (blanked), when it has no value of its own and
/// nothing is left under it.
fn emptied_owner(lines: &[String], child: usize) -> Option<usize> {
    let below = (0..child)
        .rev()
        .find(|&i| lines.get(i).and_then(|l| indent(l)).is_some())?;
    let own = indent(lines.get(below)?)?;
    let bare = lines.get(below)?.trim_end().ends_with(':');
    // `below` is the nearest written line above `child`: anything under it would be
    // more indented, and a less or equally indented line means nothing is left.
    let has_children = lines
        .iter()
        .skip(below + 1)
        .find_map(|l| indent(l))
        .is_some_and(|n| n > own);
    (bare && !has_children).then_some(below)
}

/// saphyr's message without the position it also puts in front (the diagnostic
/// carries it).
fn without_position(message: &str) -> &str {
    let rest = message.strip_prefix("error: ").unwrap_or(message);
    match rest.split_once(": ") {
        Some((pos, m)) if pos.starts_with("line ") && pos.contains(" column ") => m,
        _ => rest,
    }
}

/// Lines to blank for one schema error (0-based, inclusive), keeping the first
/// `keep` bytes of the first line (a list item's dash, when the item has more fields).
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    first: usize,
    last: usize,
    keep: usize,
}

/// Indentation of a line, `None` for a blank or comment line.
fn indent(line: &str) -> Option<usize> {
    let t = line.trim_start();
    (!t.is_empty() && !t.starts_with('#')).then(|| line.len() - t.len())
}

/// Where the entry of a line starts (0-based column: past a list item's dash), and the
/// length of the dash prefix to keep when only the key goes.
fn key_column(line: &str) -> Option<(usize, usize)> {
    let own = indent(line)?;
    let t = line.get(own..)?;
    match t.strip_prefix('-') {
        Some(rest) if rest.is_empty() || rest.starts_with(' ') => {
            let after = rest.len() - rest.trim_start().len();
            Some((own + 1 + after, own + 1))
        }
        _ => Some((own, 0)),
    }
}

/// The key a block-mapping line sets (`  key: value`, `- key: value`).
fn entry_key(line: &str) -> Option<&str> {
    let (col, _) = key_column(line)?;
    let (key, _) = line.get(col..)?.split_once(':')?;
    let key = key.trim().trim_matches(['"', '\'']);
    (!key.is_empty() && !key.contains([' ', '{', '[', ','])).then_some(key)
}

/// The entry a schema error at 1-based `line`:`col` is in: the key there with
/// everything indented under it. A value of the wrong shape whose block starts on its
/// own line (a list where a mapping belongs) is reported where the block starts: the
/// entry is the key above it. `None`: nothing to leave out (no position, a missing
/// key, a blank line).
fn schema_entry(lines: &[String], line: usize, col: usize, message: &str) -> Option<Entry> {
    if line == 0 {
        return None;
    }
    let missing = message.contains("missing field");
    let at = line - 1;
    let (key_col, dash) = key_column(lines.get(at)?)?;
    // A list item missing a field: the item goes.
    if missing && dash > 0 && col <= key_col + 1 {
        let own = indent(lines.get(at)?)?;
        let last = (at + 1..lines.len())
            .take_while(|&i| lines.get(i).and_then(|l| indent(l)).is_none_or(|n| n > own))
            .last()
            .unwrap_or(at);
        return Some(Entry {
            first: at,
            last,
            keep: 0,
        });
    }
    let shape = [
        "invalid type: map",
        "invalid type: sequence",
        "expected a map",
        "expected a sequence",
    ]
    .iter()
    .any(|m| message.contains(m))
        || message.contains("invalid type") && message.contains("expected struct");
    // A block whose shape is wrong, or a mapping missing a field, starts at this line's
    // entry: the key owning the block goes (none at the top: nothing to leave out).
    let first = if (shape || missing) && col <= key_col + 1 {
        let own = indent(lines.get(at)?)?;
        (0..at).rev().find(|&i| {
            lines
                .get(i)
                .and_then(|l| indent(l))
                .is_some_and(|n| n < own)
        })?
    } else {
        at
    };
    let (key_col, dash) = key_column(lines.get(first)?)?;
    let mut last = first;
    let mut sibling = false;
    for (i, l) in lines.iter().enumerate().skip(first + 1) {
        match indent(l) {
            None => continue,
            Some(n) if n > key_col => last = i,
            Some(n) => {
                // Another field of the same list item: the item stays, without this key.
                sibling = n == key_col && dash > 0;
                break;
            }
        }
    }
    Some(Entry {
        first,
        last,
        keep: if sibling { dash } else { 0 },
    })
}
