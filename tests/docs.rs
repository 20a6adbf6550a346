//! Every console block of the README and of `docs/*.md` is run against the real
//! binary, and its output must match what the page shows, so the docs cannot drift.
//!
//! A small harness of our own rather than `trycmd`: the blocks are shell sessions
//! (servers started in the background, `dig` and `curl` against them, `export`,
//! pipes), which trycmd's one-command-per-case model cannot run, and the pages must
//! stay readable as a user types them.
//!
//! The rules, so a page author knows what is checked:
//! - a block fenced ```` ```console ```` is a session; each `$ ` line is a command run
//!   in one bash shell (so `export`, `cd` and background jobs carry on), in a fresh
//!   copy of the repository's example deployment (`meridian.yaml`, `zones/`,
//!   `policies/`, `geoip/`, `examples/`, `dist/`), with the `meridian` under test first
//!   on `PATH`; `cargo run --release --` stands for `meridian`;
//! - the lines after a command are its output (stdout and stderr), compared with
//!   whitespace runs taken as one space; `[..]` in a line matches any text, and a line
//!   `...` any number of lines;
//! - a command ending in `&` runs in the background with its output discarded (send a
//!   server's log to a file to show it); everything a page's blocks started is killed when
//!   the page ends (a page is one terminal session: a server one block starts serves the
//!   blocks after it); a block has two minutes.
//!
//! A block fenced ```` ```text ```` or ```` ```sh ```` is not run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Block {
    file: PathBuf,
    line: usize,
    /// (command, expected output lines)
    steps: Vec<(String, Vec<String>)>,
}

fn blocks(file: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut out = Vec::new();
    let mut current: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        match &mut current {
            None if line.trim_end() == "```console" => {
                current = Some(Block {
                    file: file.to_path_buf(),
                    line: i + 1,
                    steps: Vec::new(),
                });
            }
            None => {}
            Some(_) if line.trim_end() == "```" => out.extend(current.take()),
            Some(b) => match line.strip_prefix("$ ") {
                Some(cmd) => b.steps.push((cmd.to_string(), Vec::new())),
                None => match b.steps.last_mut() {
                    Some((_, expected)) => expected.push(line.to_string()),
                    None => panic!(
                        "{}:{}: a console block starts with a `$ ` command",
                        file.display(),
                        i + 1
                    ),
                },
            },
        }
    }
    out
}

/// Whitespace runs as one space, trailing space gone.
fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether `actual` matches `pattern`, where `[..]` matches any text.
fn line_matches(pattern: &str, actual: &str) -> bool {
    let (p, a) = (squash(pattern), squash(actual));
    let parts: Vec<&str> = p.split("[..]").collect();
    if parts.len() == 1 {
        return p == a;
    }
    let mut rest = a.as_str();
    for (k, part) in parts.iter().enumerate() {
        let part = part.trim();
        if k == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if k == parts.len() - 1 {
            return part.is_empty() || rest.trim_end().ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// Whether `actual` matches `expected`, where a line `...` matches any lines.
fn lines_match(expected: &[String], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.iter().all(|l| l.trim().is_empty()),
        Some((e, rest)) if e.trim() == "..." => {
            (0..=actual.len()).any(|skip| lines_match(rest, &actual[skip..]))
        }
        Some((e, rest)) => actual
            .split_first()
            .is_some_and(|(a, more)| line_matches(e, a) && lines_match(rest, more)),
    }
}

fn workspace() -> tempfile::TempDir {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    for item in [
        "meridian.yaml",
        "zones",
        "policies",
        "geoip",
        "examples",
        "dist",
    ] {
        let ok = Command::new("cp")
            .arg("-a")
            .arg(root.join(item))
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "copy {item}");
    }
    // The binary under test as `meridian`, first on PATH.
    std::fs::create_dir_all(dir.path().join(".bin")).unwrap();
    std::os::unix::fs::symlink(common::BIN, dir.path().join(".bin/meridian")).unwrap();
    dir
}

const MARK: &str = "@@@meridian-docs-step@@@";

/// Runs a block; returns each step's output lines and the process group it ran in
/// (killed when the page ends: a page is one terminal session, so a server one block
/// starts serves the blocks after it).
fn run(block: &Block, dir: &Path) -> (Vec<Vec<String>>, u32) {
    let mut script = String::from("set +e\nexec 2>&1\n");
    for (cmd, _) in &block.steps {
        let cmd = cmd.replace("cargo run --release -- ", "meridian ");
        script.push_str(&format!("echo {MARK}\n"));
        match cmd.trim_end().strip_suffix('&') {
            Some(bg) if !bg.trim_end().ends_with('&') => {
                script.push_str(&format!("{{ {bg} ; }} >/dev/null 2>&1 &\n"))
            }
            _ => {
                script.push_str(&cmd);
                script.push('\n');
            }
        }
    }
    script.push_str(&format!("echo {MARK}\n"));
    let out_path = dir.join(".docs-output");
    // From a file: with `bash -c`, the commands would be on the shell's own command
    // line, and a `pkill -f` in a block would kill the shell running it.
    let script_path = dir.join(".docs-script.sh");
    std::fs::write(&script_path, &script).unwrap();
    let mut child = Command::new("setsid")
        .arg("bash")
        .arg(&script_path)
        .current_dir(dir)
        .env(
            "PATH",
            format!(
                "{}:{}",
                dir.join(".bin").display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env_remove("MERIDIAN_ADMIN_TOKEN")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pgid = child.id();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if child.try_wait().unwrap().is_none() {
        kill_group(pgid);
    }
    let _ = child.wait();
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    let mut steps: Vec<Vec<String>> = text
        .split(&format!("{MARK}\n"))
        .map(|s| s.lines().map(str::to_string).collect())
        .collect();
    if !steps.is_empty() {
        steps.remove(0); // before the first mark
    }
    (steps, pgid)
}

fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

fn pages() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    // MERIDIAN_DOCS=cluster runs only the pages whose name holds it (for page authors).
    if let Ok(only) = std::env::var("MERIDIAN_DOCS") {
        pages.retain(|p| p.display().to_string().contains(&only));
    }
    pages
}

#[test]
fn the_harness_matches_as_documented() {
    assert!(line_matches("a  [..] c", "a b b c"));
    assert!(line_matches("id: [..]", "id: 30149"));
    assert!(!line_matches("status: NOERROR", "status: NXDOMAIN"));
    let exp: Vec<String> = ["first", "...", "last"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert!(lines_match(&exp, &["first", "x", "y", "last"]));
    assert!(!lines_match(&exp, &["first", "x"]));
    assert!(lines_match(&[], &[""]));
}

#[test]
fn every_console_block_in_the_docs_gives_the_output_shown() {
    let mut failures = Vec::new();
    let mut ran = 0;
    for page in pages() {
        let dir = workspace();
        let mut groups = Vec::new();
        for block in blocks(&page) {
            ran += 1;
            let (got, group) = run(&block, dir.path());
            groups.push(group);
            for (k, (cmd, expected)) in block.steps.iter().enumerate() {
                let actual: Vec<&str> = got
                    .get(k)
                    .map(|v| v.iter().map(String::as_str).collect())
                    .unwrap_or_default();
                if !lines_match(expected, &actual) {
                    failures.push(format!(
                        "{}:{}: `{cmd}`\n--- shown\n{}\n--- got\n{}\n",
                        block.file.display(),
                        block.line,
                        expected.join("\n"),
                        actual.join("\n")
                    ));
                }
            }
        }
        for g in groups {
            kill_group(g);
        }
    }
    assert!(ran > 0, "no console blocks found");
    assert!(
        failures.is_empty(),
        "{} steps differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
