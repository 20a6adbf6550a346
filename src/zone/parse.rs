//! Master file → records with owner, type, TTL and wire-format RDATA.
//!
//! Directives (`$ORIGIN`, `$TTL`, `$INCLUDE`), owners, TTLs and classes are handled here;
//! the RDATA of each record is parsed by NLnet Labs' `domain` zone-file scanner, which
//! knows the presentation format of every type we serve (SVCB/HTTPS, CAA, NAPTR, TLSA,
//! RFC 3597 `\#` …). We compose it straight back to uncompressed wire form, so the bytes
//! we later send are exactly what the file says.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use bytes::Bytes;
use domain::base::iana::Rtype;
use domain::base::rdata::ComposeRecordData;
use domain::zonefile::inplace::{Entry as DomainEntry, Zonefile};

use super::lexer::{Entry, Lexer, Token};
use crate::name;

const MAX_INCLUDE_DEPTH: usize = 16;
/// RFC 2181 8: TTLs are 31-bit.
const MAX_TTL: u32 = 0x7fff_ffff;

#[derive(Debug, Clone)]
pub struct ParsedRecord {
    pub file: PathBuf,
    pub line: usize,
    /// Wire form, case as written.
    pub owner: Vec<u8>,
    pub rtype: Rtype,
    pub ttl: u32,
    pub rdata: Vec<u8>,
}

pub use crate::diag::Diagnostic as ZoneError;

struct State {
    /// Most records to read (`limits.zone_records`); reading stops there.
    max_records: usize,
    origin: Vec<u8>,
    default_ttl: Option<u32>,
    last_ttl: Option<u32>,
    last_owner: Option<Vec<u8>>,
}

/// Parses one zone file. `zones_dir` confines `$INCLUDE`. All errors found are returned
/// (parsing goes on after a bad record so an operator sees every mistake at once).
pub fn parse_file(
    path: &Path,
    origin: &[u8],
    zones_dir: &Path,
    max_records: usize,
) -> (Vec<ParsedRecord>, Vec<ZoneError>) {
    let mut records = Vec::new();
    let mut errors = Vec::new();
    let mut state = State {
        max_records,
        origin: origin.to_vec(),
        default_ttl: None,
        last_ttl: None,
        last_owner: None,
    };
    parse_into(path, zones_dir, &mut state, 0, &mut records, &mut errors);
    (records, errors)
}

fn parse_into(
    path: &Path,
    zones_dir: &Path,
    state: &mut State,
    depth: usize,
    records: &mut Vec<ParsedRecord>,
    errors: &mut Vec<ZoneError>,
) {
    let text = match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                // Zone files are ASCII with escapes; a stray byte is reported, not guessed at.
                let valid = e.utf8_error().valid_up_to();
                let line = e
                    .as_bytes()
                    .get(..valid)
                    .unwrap_or_default()
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count()
                    + 1;
                errors.push(ZoneError::new(
                    path,
                    line,
                    "file is not valid UTF-8 (use \\DDD escapes)",
                ));
                return;
            }
        },
        Err(e) => {
            errors.push(ZoneError {
                column: None,
                file: path.to_path_buf(),
                line: 0,
                message: format!("cannot read file: {e}"),
            });
            return;
        }
    };
    let mut lexer = Lexer::new(&text);
    loop {
        let entry = match lexer.next_entry() {
            Ok(Some(e)) => e,
            Ok(None) => break,
            Err(e) => {
                errors.push(ZoneError {
                    column: None,
                    file: path.to_path_buf(),
                    line: e.line,
                    message: e.message,
                });
                break;
            }
        };
        let err = |message: String| ZoneError {
            column: None,
            file: path.to_path_buf(),
            line: entry.line,
            message,
        };
        let first = entry.tokens.first().map(|t| t.raw).unwrap_or_default();
        if entry.has_owner && first.starts_with('$') {
            match directive(&entry, path, zones_dir, state, depth, records, errors) {
                Ok(()) => {}
                Err(m) => errors.push(err(m)),
            }
            continue;
        }
        if records.len() >= state.max_records {
            errors.push(err(format!(
                "more than {} records in the zone (limits.zone_records): not read further",
                state.max_records
            )));
            return;
        }
        match record(&entry, state) {
            Ok(r) => records.push(ParsedRecord {
                file: path.to_path_buf(),
                line: entry.line,
                owner: r.0,
                rtype: r.1,
                ttl: r.2,
                rdata: r.3,
            }),
            Err(m) => errors.push(err(m)),
        }
    }
}

fn directive(
    entry: &Entry<'_>,
    path: &Path,
    zones_dir: &Path,
    state: &mut State,
    depth: usize,
    records: &mut Vec<ParsedRecord>,
    errors: &mut Vec<ZoneError>,
) -> Result<(), String> {
    let args: Vec<&str> = entry.tokens.iter().skip(1).map(|t| t.raw).collect();
    let keyword = entry
        .tokens
        .first()
        .map(|t| t.raw.to_ascii_uppercase())
        .unwrap_or_default();
    match keyword.as_str() {
        "$ORIGIN" => {
            let [o] = args.as_slice() else {
                return Err("$ORIGIN takes exactly one name".into());
            };
            state.origin = name::from_text(o, &state.origin).map_err(|e| e.to_string())?;
            Ok(())
        }
        "$TTL" => {
            let [t] = args.as_slice() else {
                return Err("$TTL takes exactly one TTL".into());
            };
            state.default_ttl = Some(parse_ttl(t)?);
            Ok(())
        }
        "$INCLUDE" => {
            let (file, origin) = match args.as_slice() {
                [f] => (*f, None),
                [f, o] => (*f, Some(*o)),
                _ => return Err("$INCLUDE takes a file name and an optional origin".into()),
            };
            if depth >= MAX_INCLUDE_DEPTH {
                return Err(format!(
                    "$INCLUDE nested more than {MAX_INCLUDE_DEPTH} deep"
                ));
            }
            let file = file.trim_matches('"');
            let target = confine(zones_dir, file)?;
            if target == path {
                return Err(format!("$INCLUDE {file} includes itself"));
            }
            // RFC 1035 5.1: an $INCLUDE never changes the parent file's origin.
            let saved_origin = state.origin.clone();
            if let Some(o) = origin {
                state.origin = name::from_text(o, &state.origin).map_err(|e| e.to_string())?;
            }
            parse_into(&target, zones_dir, state, depth + 1, records, errors);
            state.origin = saved_origin;
            Ok(())
        }
        other => Err(format!("unsupported directive {other}")),
    }
}

/// Resolves an `$INCLUDE` path relative to the zones folder and refuses anything that
/// leaves it (symlinks included), so a zone file cannot read arbitrary files.
fn confine(zones_dir: &Path, file: &str) -> Result<PathBuf, String> {
    let root = zones_dir
        .canonicalize()
        .map_err(|e| format!("zones folder {}: {e}", zones_dir.display()))?;
    let candidate = root.join(file);
    let resolved = candidate
        .canonicalize()
        .map_err(|e| format!("$INCLUDE {file}: {e}"))?;
    if !resolved.starts_with(&root) {
        return Err(format!(
            "$INCLUDE {file} is outside the zones folder {}",
            root.display()
        ));
    }
    Ok(resolved)
}

type Fields = (Vec<u8>, Rtype, u32, Vec<u8>);

fn record(entry: &Entry<'_>, state: &mut State) -> Result<Fields, String> {
    let mut tokens = entry.tokens.iter().peekable();
    let owner = if entry.has_owner {
        let t = tokens.next().ok_or("empty entry")?;
        let o = name::from_text(t.raw, &state.origin).map_err(|e| e.to_string())?;
        state.last_owner = Some(o.clone());
        o
    } else {
        state
            .last_owner
            .clone()
            .ok_or("record has no owner and there is no previous owner")?
    };
    let mut ttl = None;
    let mut class_seen = false;
    let rtype_token: &Token<'_> = loop {
        let t = tokens.next().ok_or("missing record type")?;
        if ttl.is_none() && t.raw.starts_with(|c: char| c.is_ascii_digit()) {
            ttl = Some(parse_ttl(t.raw)?);
        } else if !class_seen && is_class(t.raw) {
            if !t.raw.eq_ignore_ascii_case("IN") && !t.raw.eq_ignore_ascii_case("CLASS1") {
                return Err(format!("class {} is not supported (only IN)", t.raw));
            }
            class_seen = true;
        } else {
            break t;
        }
    };
    let rtype = Rtype::from_str(rtype_token.raw)
        .map_err(|_| format!("unknown record type {}", rtype_token.raw))?;
    let ttl = match ttl {
        Some(t) => {
            state.last_ttl = Some(t);
            t
        }
        None => state
            .default_ttl
            .or(state.last_ttl)
            .ok_or("record has no TTL and no $TTL or earlier TTL applies (add a $TTL line)")?,
    };
    let rdata_text: Vec<&str> = tokens.map(|t| t.raw).collect();
    let rdata = parse_rdata(rtype, rtype_token.raw, &rdata_text.join(" "), &state.origin)?;
    Ok((owner, rtype, ttl, rdata))
}

fn is_class(s: &str) -> bool {
    ["IN", "CH", "HS", "CS", "NONE", "ANY"]
        .iter()
        .any(|c| s.eq_ignore_ascii_case(c))
        || (s.len() > 5
            && s.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("CLASS"))
            && s.get(5..)
                .is_some_and(|d| d.bytes().all(|b| b.is_ascii_digit())))
}

/// RFC 1035 TTLs in seconds, plus BIND's unit suffixes (`1h30m`, `2d`), which operators
/// coming from BIND, NSD or Knot expect.
pub fn parse_ttl(s: &str) -> Result<u32, String> {
    let bad = || format!("bad TTL {s:?}");
    let mut total: u64 = 0;
    let mut num: Option<u64> = None;
    for c in s.chars() {
        if let Some(d) = c.to_digit(10) {
            num = Some(num.unwrap_or(0) * 10 + u64::from(d));
            if num > Some(u64::from(u32::MAX)) {
                return Err(bad());
            }
            continue;
        }
        let unit = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            'w' => 604_800,
            _ => return Err(bad()),
        };
        total += num.take().ok_or_else(bad)? * unit;
    }
    total += num.unwrap_or(0);
    if s.is_empty() || total > u64::from(MAX_TTL) {
        return Err(format!("{} (at most {MAX_TTL})", bad()));
    }
    Ok(total as u32)
}

fn parse_rdata(
    rtype: Rtype,
    type_text: &str,
    rdata: &str,
    origin: &[u8],
) -> Result<Vec<u8>, String> {
    match rtype {
        Rtype::OPT | Rtype::ANY | Rtype::AXFR | Rtype::IXFR | Rtype::TSIG => {
            return Err(format!("{type_text} cannot appear in a zone file"));
        }
        _ => {}
    }
    let origin = domain::base::Name::from_octets(Bytes::copy_from_slice(origin))
        .map_err(|e| format!("bad origin: {e}"))?;
    let mut zf = Zonefile::from(format!("@ 0 IN {type_text} {rdata}\n").as_str());
    zf.set_origin(origin);
    let entry = zf.next_entry().map_err(|e| {
        // domain reports positions in the one-line text we built; the line that
        // matters is the entry's, added by the caller.
        let msg = e.to_string();
        let msg = msg.splitn(3, ':').nth(2).unwrap_or(&msg).trim().to_string();
        format!("bad {type_text} record data {rdata:?}: {msg}")
    })?;
    match entry {
        Some(DomainEntry::Record(rec)) => {
            let mut wire = Vec::new();
            rec.data()
                .compose_rdata(&mut wire)
                .map_err(|_| format!("{type_text} record data does not fit in 65535 octets"))?;
            if wire.len() > usize::from(u16::MAX) {
                return Err(format!(
                    "{type_text} record data does not fit in 65535 octets"
                ));
            }
            Ok(wire)
        }
        _ => Err(format!("bad {type_text} record data {rdata:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_units_follow_bind() {
        assert_eq!(parse_ttl("3600"), Ok(3600));
        assert_eq!(parse_ttl("1h30m"), Ok(5400));
        assert_eq!(parse_ttl("1W"), Ok(604_800));
        assert!(parse_ttl("h").is_err());
        assert!(parse_ttl("4294967296").is_err());
        assert!(parse_ttl("2147483648").is_err());
    }

    #[test]
    fn rdata_is_composed_to_uncompressed_wire_form() {
        let origin = name::from_text("example.com.", name::ROOT).unwrap();
        let mx = parse_rdata(Rtype::MX, "MX", "10 mail", &origin).unwrap();
        let mut expected = vec![0, 10];
        expected.extend(name::from_text("mail.example.com.", name::ROOT).unwrap());
        assert_eq!(mx, expected);
        let txt = parse_rdata(Rtype::TXT, "TXT", "\"a b\" c", &origin).unwrap();
        assert_eq!(txt, b"\x03a b\x01c");
        let unknown = parse_rdata(Rtype::from_int(65000), "TYPE65000", r"\# 3 abcdef", &origin);
        assert_eq!(unknown.unwrap(), vec![0xab, 0xcd, 0xef]);
        assert!(parse_rdata(Rtype::A, "A", "1.2.3", &origin).is_err());
    }
}
