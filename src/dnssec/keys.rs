//! DNSSEC keys in BIND's format: `K<zone>.+<alg>+<tag>.key` (the DNSKEY record, with
//! the timing as comments) and `.private` (`Private-key-format: v1.x`, the secret, and
//! the timing lines `dnssec-keygen -P/-A/-I/-D` and `dnssec-settime` write). Reading
//! them, writing them (`meridian keygen`), and the key states their timing gives at an
//! instant.
//!
//! The secret key's parsing and the key pair are NLnet Labs `domain`'s (ring backend);
//! this module only reads the public half and the timing, which `domain` leaves to the
//! caller.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use domain::crypto::sign::{self, GenerateParams, KeyPair, SecretKeyBytes};
use domain::rdata::Dnskey;

use crate::diag::Diagnostic;
use crate::name;

/// The SEP bit (RFC 4034 2.1.1): a key-signing key, what the parent's DS points to.
pub const FLAG_SEP: u16 = 0x0001;
/// The Zone Key bit: a DNSKEY that signs zone data.
pub const FLAG_ZONE: u16 = 0x0100;

/// Algorithms Meridian signs with (RFC 8624's recommended ones that ring implements).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    EcdsaP256Sha256,
    Ed25519,
}

impl Algorithm {
    pub fn number(self) -> u8 {
        match self {
            Algorithm::EcdsaP256Sha256 => 13,
            Algorithm::Ed25519 => 15,
        }
    }

    pub fn from_number(n: u8) -> Option<Algorithm> {
        match n {
            13 => Some(Algorithm::EcdsaP256Sha256),
            15 => Some(Algorithm::Ed25519),
            _ => None,
        }
    }

    pub fn mnemonic(self) -> &'static str {
        match self {
            Algorithm::EcdsaP256Sha256 => "ECDSAP256SHA256",
            Algorithm::Ed25519 => "ED25519",
        }
    }

    pub fn from_name(s: &str) -> Option<Algorithm> {
        match s.to_ascii_lowercase().as_str() {
            "ecdsap256sha256" | "13" => Some(Algorithm::EcdsaP256Sha256),
            "ed25519" | "15" => Some(Algorithm::Ed25519),
            _ => None,
        }
    }
}

/// When a key enters and leaves the zone (Unix seconds; `None`: not set). BIND's
/// meaning: published from `publish`, signing from `activate` until `inactive`, gone
/// from the DNSKEY set at `delete`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timing {
    pub publish: Option<u64>,
    pub activate: Option<u64>,
    pub inactive: Option<u64>,
    pub delete: Option<u64>,
}

impl Timing {
    /// In the DNSKEY RRset at `now`. A key without a publish time is published once it
    /// is active (or always, when it has neither, as an imported key without timing).
    pub fn published(&self, now: u64) -> bool {
        let from = self.publish.or(self.activate).unwrap_or(0);
        from <= now && self.delete.is_none_or(|d| now < d)
    }

    /// Signs at `now`.
    pub fn active(&self, now: u64) -> bool {
        self.published(now)
            && self.activate.unwrap_or(0) <= now
            && self.inactive.is_none_or(|i| now < i)
    }

    /// The next instant after `now` at which the key's state changes.
    pub fn next_event(&self, now: u64) -> Option<u64> {
        [self.publish, self.activate, self.inactive, self.delete]
            .into_iter()
            .flatten()
            .filter(|&t| t > now)
            .min()
    }
}

/// One key pair, read and checked.
#[derive(Debug)]
pub struct Key {
    /// The `.key` file (what errors and `meridian check` name).
    pub file: PathBuf,
    /// The zone it is for: lowercase wire form.
    pub zone: Box<[u8]>,
    pub flags: u16,
    pub algorithm: Algorithm,
    pub tag: u16,
    /// The DNSKEY RDATA: flags, protocol 3, algorithm, public key.
    pub dnskey: Box<[u8]>,
    pub timing: Timing,
    pub pair: KeyPair,
}

impl Key {
    pub fn is_ksk(&self) -> bool {
        self.flags & FLAG_SEP != 0
    }

    pub fn role(&self) -> &'static str {
        if self.is_ksk() { "KSK" } else { "ZSK" }
    }

    /// The DS RDATA for the parent (digest type 2, SHA-256; RFC 4509).
    pub fn ds(&self) -> Vec<u8> {
        ds_rdata(&self.zone, self.tag, self.algorithm.number(), &self.dnskey)
    }
}

pub fn ds_rdata(zone: &[u8], tag: u16, algorithm: u8, dnskey: &[u8]) -> Vec<u8> {
    let mut input = zone.to_ascii_lowercase();
    input.extend_from_slice(dnskey);
    let digest = ring::digest::digest(&ring::digest::SHA256, &input);
    let mut ds = Vec::with_capacity(36);
    ds.extend_from_slice(&tag.to_be_bytes());
    ds.push(algorithm);
    ds.push(2);
    ds.extend_from_slice(digest.as_ref());
    ds
}

/// The key tag of a DNSKEY RDATA (RFC 4034 appendix B; not algorithm 1).
pub fn key_tag(dnskey: &[u8]) -> u16 {
    let mut acc: u32 = 0;
    for (i, b) in dnskey.iter().enumerate() {
        acc += if i % 2 == 0 {
            u32::from(*b) << 8
        } else {
            u32::from(*b)
        };
    }
    acc += (acc >> 16) & 0xffff;
    (acc & 0xffff) as u16
}

fn dnskey_rdata(flags: u16, algorithm: u8, public: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(4 + public.len());
    r.extend_from_slice(&flags.to_be_bytes());
    r.push(3);
    r.push(algorithm);
    r.extend_from_slice(public);
    r
}

/// BIND's timestamp, `YYYYMMDDHHMMSS` UTC, as Unix seconds.
pub fn parse_timestamp(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.len() != 14 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<i64>().ok());
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, se) = (num(8..10)?, num(10..12)?, num(12..14)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    u64::try_from(days * 86_400 + h * 3600 + mi * 60 + se).ok()
}

pub fn format_timestamp(t: u64) -> String {
    let days = (t / 86_400) as i64;
    let secs = t % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Howard Hinnant's `days_from_civil`: days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The timing lines of a `.private` file (`Publish: 20261203073109`).
fn timing_of(private: &str) -> Result<Timing, String> {
    let mut t = Timing::default();
    for (n, line) in private.lines().enumerate() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let slot = match k.trim() {
            "Publish" => &mut t.publish,
            "Activate" => &mut t.activate,
            "Inactive" => &mut t.inactive,
            "Delete" => &mut t.delete,
            _ => continue,
        };
        *slot = Some(parse_timestamp(v).ok_or_else(|| {
            format!(
                "line {}: {} {:?} is not a YYYYMMDDHHMMSS time",
                n + 1,
                k.trim(),
                v.trim()
            )
        })?);
    }
    Ok(t)
}

/// The DNSKEY record of a `.key` file: `owner [ttl] [class] DNSKEY flags 3 alg key…`,
/// after `;` comments.
fn parse_public(text: &str) -> Result<(Vec<u8>, u16, u8, Vec<u8>), String> {
    let mut tokens = Vec::new();
    for line in text.lines() {
        let line = line.split(';').next().unwrap_or_default();
        tokens.extend(
            line.split_whitespace()
                .filter(|t| *t != "(" && *t != ")")
                .map(|t| t.trim_matches(|c| c == '(' || c == ')')),
        );
    }
    let at = tokens
        .iter()
        .position(|t| t.eq_ignore_ascii_case("DNSKEY"))
        .ok_or("no DNSKEY record")?;
    let owner = tokens.first().filter(|_| at > 0).ok_or("no owner name")?;
    if !owner.ends_with('.') {
        return Err(format!("owner {owner:?} is not absolute (no final dot)"));
    }
    let zone = name::from_text(owner, &[0]).map_err(|e| format!("owner {owner:?}: {e}"))?;
    let field = |i: usize, what: &str| -> Result<&str, String> {
        tokens
            .get(at + i)
            .copied()
            .ok_or_else(|| format!("DNSKEY has no {what}"))
    };
    let flags: u16 = field(1, "flags")?
        .parse()
        .map_err(|_| "DNSKEY flags are not a number".to_string())?;
    let protocol = field(2, "protocol")?;
    if protocol != "3" {
        return Err(format!("DNSKEY protocol {protocol} (must be 3)"));
    }
    let alg: u8 = field(3, "algorithm")?
        .parse()
        .map_err(|_| "DNSKEY algorithm is not a number".to_string())?;
    let b64: String = tokens.get(at + 4..).unwrap_or_default().concat();
    let public: Vec<u8> = domain::utils::base64::decode(&b64)
        .map_err(|e| format!("DNSKEY public key is not base64 ({e})"))?;
    if public.is_empty() {
        return Err("DNSKEY has no public key".into());
    }
    Ok((zone.to_ascii_lowercase(), flags, alg, public))
}

/// Reads one key pair from its `.key` file and the `.private` beside it.
pub fn read(key_file: &Path) -> Result<Key, Diagnostic> {
    let err = |file: &Path, m: String| Diagnostic::new(file, 0, m);
    let text = std::fs::read_to_string(key_file).map_err(|e| err(key_file, e.to_string()))?;
    let (zone, flags, alg_number, public) = parse_public(&text).map_err(|m| err(key_file, m))?;
    let algorithm = Algorithm::from_number(alg_number).ok_or_else(|| {
        err(
            key_file,
            format!(
                "algorithm {alg_number} is not supported: Meridian signs with 13 (ECDSAP256SHA256) or 15 (ED25519)"
            ),
        )
    })?;
    if flags & FLAG_ZONE == 0 {
        return Err(err(
            key_file,
            format!("DNSKEY flags {flags}: the Zone Key bit (256) is not set"),
        ));
    }
    let private_file = key_file.with_extension("private");
    let private = std::fs::read_to_string(&private_file).map_err(|e| {
        err(
            &private_file,
            format!("the private half of {}: {e}", key_file.display()),
        )
    })?;
    let secret = SecretKeyBytes::parse_from_bind(&private)
        .map_err(|e| err(&private_file, format!("not a BIND private key ({e})")))?;
    let timing = timing_of(&private).map_err(|m| err(&private_file, m))?;
    let dnskey = dnskey_rdata(flags, alg_number, &public);
    let record = Dnskey::new(
        flags,
        3,
        domain::base::iana::SecurityAlgorithm::from_int(alg_number),
        public.clone(),
    )
    .map_err(|e| err(key_file, format!("DNSKEY: {e}")))?;
    let pair = KeyPair::from_bytes(&secret, &record).map_err(|e| {
        err(
            &private_file,
            format!(
                "the private key does not match {} ({e})",
                key_file.display()
            ),
        )
    })?;
    let tag = key_tag(&dnskey);
    // dnssec-keygen names the file after the tag; a mismatch is a copied or edited file.
    if let Some(named) = key_file
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.rsplit('+').next())
        .and_then(|s| s.parse::<u16>().ok())
        && named != tag
    {
        return Err(err(
            key_file,
            format!("the file name says key tag {named}, the key's tag is {tag}"),
        ));
    }
    Ok(Key {
        file: key_file.to_path_buf(),
        zone: zone.into(),
        flags,
        algorithm,
        tag,
        dnskey: dnskey.into(),
        timing,
        pair,
    })
}

/// Every `K*.key` in `dir` (a missing folder holds no keys). All errors at once.
pub fn read_dir(dir: &Path) -> Result<Vec<Key>, Vec<Diagnostic>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(vec![Diagnostic::new(dir, 0, e.to_string())]),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "key")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('K'))
        })
        .collect();
    files.sort();
    let mut keys = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        match read(&f) {
            Ok(k) => keys.push(k),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(keys)
    } else {
        Err(errors)
    }
}

/// What `meridian keygen` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Flags 257, signing everything while the zone has no active ZSK (the default).
    Combined,
    /// Flags 257: with a ZSK active, it signs only the DNSKEY RRset.
    Ksk,
    /// Flags 256: signs the zone's data, not the DNSKEY RRset.
    Zsk,
}

/// A freshly generated key pair, in BIND's two files' text.
pub struct Generated {
    pub base: String,
    pub public_text: String,
    pub private_text: String,
    pub tag: u16,
    pub dnskey: Vec<u8>,
}

fn human(t: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t))
        .to_string()
}

pub fn generate(
    zone_text: &str,
    algorithm: Algorithm,
    role: Role,
    timing: Timing,
    created: u64,
) -> Result<Generated, String> {
    let zone = name::from_text(zone_text, &[0]).map_err(|e| format!("{zone_text:?}: {e}"))?;
    let mut owner = name::to_text(&zone.to_ascii_lowercase());
    if !owner.ends_with('.') {
        owner.push('.');
    }
    let params = match algorithm {
        Algorithm::EcdsaP256Sha256 => GenerateParams::EcdsaP256Sha256,
        Algorithm::Ed25519 => GenerateParams::Ed25519,
    };
    let flags = match role {
        Role::Combined | Role::Ksk => FLAG_ZONE | FLAG_SEP,
        Role::Zsk => FLAG_ZONE,
    };
    let (secret, public) = sign::generate(&params, flags).map_err(|e| e.to_string())?;
    let dnskey = dnskey_rdata(flags, algorithm.number(), public.public_key());
    let tag = key_tag(&dnskey);
    let stem = owner.trim_end_matches('.');
    let base = format!("K{stem}.+{:03}+{tag:05}", algorithm.number());
    let mut public_text = String::new();
    let what = match role {
        Role::Zsk => "zone-signing",
        _ => "key-signing",
    };
    let _ = writeln!(
        public_text,
        "; This is a {what} key, keyid {tag}, for {owner}"
    );
    let mut timing_lines = String::new();
    let mut line = |label: &str, t: Option<u64>| {
        if let Some(t) = t {
            let _ = writeln!(
                public_text,
                "; {label}: {} ({})",
                format_timestamp(t),
                human(t)
            );
            let _ = writeln!(timing_lines, "{label}: {}", format_timestamp(t));
        }
    };
    line("Created", Some(created));
    line("Publish", timing.publish);
    line("Activate", timing.activate);
    line("Inactive", timing.inactive);
    line("Delete", timing.delete);
    let _ = writeln!(
        public_text,
        "{owner} IN DNSKEY {flags} 3 {} {}",
        algorithm.number(),
        domain::utils::base64::encode_string(public.public_key())
    );
    let mut private_text = String::new();
    secret
        .format_as_bind(&mut private_text)
        .map_err(|e| e.to_string())?;
    private_text.push_str(&timing_lines);
    Ok(Generated {
        base,
        public_text,
        private_text,
        tag,
        dnskey,
    })
}

/// A DS record in presentation form, as the parent zone's operator enters it.
pub fn ds_text(zone: &[u8], tag: u16, algorithm: u8, dnskey: &[u8]) -> String {
    let ds = ds_rdata(zone, tag, algorithm, dnskey);
    let digest: String = ds
        .get(4..)
        .unwrap_or_default()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    let mut owner = name::to_text(zone);
    if !owner.ends_with('.') {
        owner.push('.');
    }
    format!("{owner} IN DS {tag} {algorithm} 2 {digest}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn timestamps_round_trip_and_match_bind() {
        assert_eq!(parse_timestamp("19700101000000"), Some(0));
        assert_eq!(parse_timestamp("20261203073109"), Some(1_796_283_069));
        assert_eq!(format_timestamp(1_796_283_069), "20261203073109");
        assert_eq!(parse_timestamp("2026120307310"), None);
        assert_eq!(parse_timestamp("20261303073109"), None);
    }

    #[test]
    fn key_tag_of_rfc_4034_example() {
        // RFC 4034 5.4's DNSKEY (dskey.example.com, algorithm 5) has key tag 60485.
        let public = domain::utils::base64::decode::<Vec<u8>>(
            "AQOeiiR0GOMYkDshWoSKz9XzfwJr1AYtsmx3TGkJaNXVbfi/2pHm822aJ5iI9BMzNXxeYCmZDRD99WYwYqUSdjMmmAphXdvxegXd/M5+X7OrzKBaMbCVdFLUUh6DhweJBjEVv5f2wwjM9XzcnOf+EPbtG9DMBmADjFDc2w/rljwvFw==",
        )
        .unwrap();
        let rdata = dnskey_rdata(256, 5, &public);
        assert_eq!(key_tag(&rdata), 60485);
        // And its DS (RFC 4509 2.3, SHA-256).
        let zone = name::from_text("dskey.example.com.", &[0]).unwrap();
        let ds = ds_text(&zone, 60485, 5, &rdata);
        assert!(ds.ends_with(
            "60485 5 2 D4B7D520E7BB5F0F67674A0CCEB1E3E0614B93C4F9E99B8383F6A1E4469DA50A"
        ));
    }

    #[test]
    fn timing_states() {
        let t = Timing {
            publish: Some(100),
            activate: Some(200),
            inactive: Some(300),
            delete: Some(400),
        };
        assert!(!t.published(99));
        assert!(t.published(100) && !t.active(100));
        assert!(t.active(200) && t.active(299));
        assert!(!t.active(300) && t.published(300));
        assert!(!t.published(400));
        assert_eq!(t.next_event(150), Some(200));
        assert_eq!(t.next_event(400), None);
        assert!(Timing::default().active(0));
    }

    #[test]
    fn generated_keys_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let g = generate(
            "example.com",
            Algorithm::EcdsaP256Sha256,
            Role::Combined,
            Timing {
                publish: Some(1000),
                activate: Some(1000),
                ..Timing::default()
            },
            1000,
        )
        .unwrap();
        let key_file = dir.path().join(format!("{}.key", g.base));
        std::fs::write(&key_file, &g.public_text).unwrap();
        std::fs::write(key_file.with_extension("private"), &g.private_text).unwrap();
        let k = read(&key_file).unwrap();
        assert_eq!(k.tag, g.tag);
        assert_eq!(k.flags, 257);
        assert_eq!(k.timing.activate, Some(1000));
        assert_eq!(
            &*k.zone,
            &name::from_text("example.com.", &[0]).unwrap()[..]
        );
    }
}
