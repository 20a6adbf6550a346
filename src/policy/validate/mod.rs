//! Validation: the YAML spec (`spec`) → the model, every error at once as
//! `FILE:LINE:COL`. One file per part of the spec: `region` (with its health settings
//! in `health`), `policy`, and `clients` (CIDRs, countries, continents) that both use.

mod clients;
mod health;
mod policy;
mod region;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::latency::load_latency;
use super::model::*;
use super::spec::{self, POLICY_VERSION, diag};
use crate::diag::{Diagnostic, parse_yaml_all};

pub use clients::cidrs_file;
pub use health::{endpoint_from_spec, metric_from_spec, thresholds_from_spec};

/// Reads every `*.yaml`/`*.yml` in `dir` and the optional latency table, and validates
/// them together. All errors at once.
pub fn load(
    dir: &Path,
    latency_file: Option<&Path>,
    overhead_ms: f64,
) -> Result<PolicySet, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(vec![Diagnostic::new(
                dir,
                0,
                format!("cannot read policies folder: {e}"),
            )]);
        }
    };
    files.sort();
    let mut parsed = Vec::new();
    for f in files {
        let text = match crate::diag::read_yaml(&f) {
            Ok(t) => t,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        match parse_yaml_all::<spec::File>(&f, &text) {
            Ok((spec, mistakes)) => {
                errors.extend(mistakes);
                match &spec.version {
                    None => {
                        errors.push(Diagnostic::at(
                            &f,
                            1,
                            1,
                            format!(
                                "missing field `version` (this meridian reads {POLICY_VERSION})"
                            ),
                        ));
                        continue;
                    }
                    Some(v) if v.value != POLICY_VERSION => {
                        errors.push(diag(
                            &f,
                            v,
                            format!(
                                "version {} is not supported (this meridian reads {POLICY_VERSION})",
                                v.value
                            ),
                        ));
                        continue;
                    }
                    Some(_) => {}
                }
                parsed.push((f, spec));
            }
            Err(e) => errors.extend(e),
        }
    }

    // Regions first: policies in any file may use regions of any file.
    let mut set = PolicySet::default();
    let mut region_at: HashMap<String, (PathBuf, usize)> = HashMap::new();
    for (file, spec) in &parsed {
        for r in &spec.regions {
            if let Some(region) = region::region(file, r, &mut region_at, &mut errors) {
                set.regions.push(region);
            }
        }
    }
    for (i, r) in set.regions.iter_mut().enumerate() {
        r.id = i as u32; // the snapshot renumbers with the process-wide registry
    }
    if set.regions.len() > usize::from(u16::MAX) {
        errors.push(Diagnostic::new(dir, 0, "more than 65535 regions"));
    }
    let index: HashMap<String, u16> = set
        .regions
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.clone(), i as u16))
        .collect();

    let mut seen: HashMap<Box<[u8]>, (PathBuf, usize)> = HashMap::new();
    let mut maps = policy::TenantMaps::default();
    for (file, spec) in &parsed {
        for p in &spec.policies {
            if let Some(policy) = policy::policy(
                file,
                p,
                &set.regions,
                &index,
                &mut seen,
                &mut maps,
                &mut errors,
            ) {
                set.policies.push(policy);
            }
        }
    }
    set.latency.overhead_ms = overhead_ms;
    if let Some(lf) = latency_file {
        load_latency(lf, &index, &mut set.latency, &mut errors);
    }
    if errors.is_empty() {
        Ok(set)
    } else {
        errors.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        Err(errors)
    }
}
