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
