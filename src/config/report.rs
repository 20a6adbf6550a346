//! Collecting a file's diagnostics: every error and warning at its position, so the
//! sections of `meridian.yaml` are validated together and reported at once.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

use crate::diag::Diagnostic;

pub(super) type S<T> = Spanned<T>;

/// A key that was written, as opposed to left out (`null` is written).
#[derive(Debug, Default)]
pub(super) enum Given<T> {
    #[default]
    Absent,
    Written(T),
}

pub(super) fn given<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Given<T>, D::Error> {
    T::deserialize(d).map(Given::Written)
}

/// Collects diagnostics for one file.
pub(super) struct Report<'a> {
    pub(super) file: &'a Path,
    pub(super) errors: Vec<Diagnostic>,
    /// Settings that load but deserve a second look.
    pub(super) warnings: Vec<Diagnostic>,
}

impl Report<'_> {
    pub(super) fn at<T>(&mut self, s: &S<T>, message: impl Into<String>) {
        self.errors.push(Diagnostic::at(
            self.file,
            s.referenced.line() as usize,
            s.referenced.column() as usize,
            message,
        ));
    }

    pub(super) fn warn_at<T>(&mut self, s: &S<T>, message: impl Into<String>) {
        self.warnings.push(Diagnostic::at(
            self.file,
            s.referenced.line() as usize,
            s.referenced.column() as usize,
            message,
        ));
    }

    pub(super) fn duration(
        &mut self,
        key: &str,
        s: Option<&S<String>>,
        default: Duration,
    ) -> Duration {
        let Some(s) = s else { return default };
        match humantime::parse_duration(&s.value) {
            Ok(d) => d,
            Err(e) => {
                self.at(s, format!("{key} {:?}: {e}", s.value));
                default
            }
        }
    }
}
