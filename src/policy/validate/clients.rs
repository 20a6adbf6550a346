//! Who a rule's clients are: CIDR lists written inline or kept in a file, country and
//! continent codes. Shared by geo rules and residency client sets.

use std::path::Path;

use ipnet::IpNet;

use crate::diag::Diagnostic;
use crate::geo;
use crate::policy::model::EU;
use crate::policy::spec::{S, diag};

/// A CIDR list kept in its own file (`cidrs_file:`): one network a line, an address
/// alone meaning just it, `#` starting a comment, blank lines allowed. Every mistake at
/// its line.
pub fn cidrs_file(path: &Path) -> Result<Vec<IpNet>, Vec<Diagnostic>> {
    let text =
        crate::diag::read_yaml(path).map_err(|e| vec![Diagnostic::new(path, 0, e.message)])?;
    let mut nets = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or_default().trim();
        if entry.is_empty() {
            continue;
        }
        let parsed = entry
            .parse::<IpNet>()
            .or_else(|_| entry.parse::<std::net::IpAddr>().map(IpNet::from));
        match parsed {
            Ok(net) if net.trunc() == net => nets.push(net),
            Ok(net) => errors.push(Diagnostic::new(
                path,
                i + 1,
                format!("{entry} has host bits set (the network is {})", net.trunc()),
            )),
            Err(_) => errors.push(Diagnostic::new(
                path,
                i + 1,
                format!("{entry:?} is not a CIDR or an address"),
            )),
        }
    }
    if errors.is_empty() {
        Ok(nets)
    } else {
        Err(errors)
    }
}

/// `cidrs:` and `cidrs_file:` of a geo rule or a residency client set, as one list.
pub(super) fn cidr_list(
    file: &Path,
    inline: &[S<String>],
    from_file: Option<&S<String>>,
    errors: &mut Vec<Diagnostic>,
) -> Vec<IpNet> {
    let mut cidrs = Vec::new();
    for c in inline {
        match c.value.parse::<IpNet>() {
            Ok(net) if net.trunc() == net => cidrs.push(net),
            Ok(_) => errors.push(diag(file, c, format!("{} has host bits set", c.value))),
            Err(_) => errors.push(diag(file, c, format!("{:?} is not a CIDR", c.value))),
        }
    }
    if let Some(f) = from_file {
        let path = file.parent().unwrap_or(Path::new(".")).join(&f.value);
        match cidrs_file(&path) {
            Ok(more) => cidrs.extend(more),
            Err(mut e) => {
                if e.first().is_some_and(|d| d.line == 0) {
                    // Unreadable: said where it is named, too.
                    errors.push(diag(
                        file,
                        f,
                        format!(
                            "cidrs_file {}: {}",
                            path.display(),
                            e.first().map_or("", |d| d.message.as_str())
                        ),
                    ));
                } else {
                    errors.append(&mut e);
                }
            }
        }
    }
    cidrs
}

pub(super) fn country_code(
    file: &Path,
    s: &S<String>,
    errors: &mut Vec<Diagnostic>,
) -> Vec<[u8; 2]> {
    if s.value.eq_ignore_ascii_case("EU") {
        return EU.iter().filter_map(|c| geo::two(c)).collect();
    }
    match geo::country(&s.value) {
        Some((cc, ..)) => vec![cc],
        None => {
            errors.push(diag(
                file,
                s,
                format!("unknown country code {:?} (ISO 3166-1 alpha-2)", s.value),
            ));
            vec![]
        }
    }
}

pub(super) fn continent_code(
    file: &Path,
    s: &S<String>,
    errors: &mut Vec<Diagnostic>,
) -> Option<[u8; 2]> {
    let up = s.value.to_ascii_uppercase();
    if geo::CONTINENTS.contains(&up.as_str()) {
        geo::two(&up)
    } else {
        errors.push(diag(
            file,
            s,
            format!(
                "unknown continent {:?} (one of {})",
                s.value,
                geo::CONTINENTS.join(", ")
            ),
        ));
        None
    }
}
