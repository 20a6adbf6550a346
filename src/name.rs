//! Domain names in uncompressed wire form (RFC 1035 3.1), the representation the whole
//! server works in.
//!
//! A name is a byte slice of length-prefixed labels ending with the root label (0). Keys
//! in the zone store are the ASCII-lowercased wire form; because label lengths are at
//! most 63 (below b'A'), lowercasing the whole slice never touches a length byte, so a
//! lookup key is one `to_ascii_lowercase` away from the name on the wire. Walking up the
//! tree is slicing at label boundaries: no allocation, no text.

use std::fmt::Write as _;

pub const MAX_NAME_LEN: usize = 255;
pub const MAX_LABEL_LEN: usize = 63;

/// The root name in wire form.
pub const ROOT: &[u8] = &[0];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("empty label in name {0:?}")]
    EmptyLabel(String),
    #[error("label longer than 63 octets in name {0:?}")]
    LabelTooLong(String),
    #[error("name {0:?} is longer than 255 octets")]
    NameTooLong(String),
    #[error("bad escape sequence in name {0:?}")]
    BadEscape(String),
}

/// Parses a name in presentation format (RFC 1035 5.1): `@` is the origin, a name
/// without a trailing dot is relative to `origin`, `\X` and `\DDD` escape octets.
pub fn from_text(text: &str, origin: &[u8]) -> Result<Vec<u8>, NameError> {
    if text == "@" {
        return Ok(origin.to_vec());
    }
    if text == "." {
        return Ok(ROOT.to_vec());
    }
    let mut out = Vec::with_capacity(text.len() + 2 + origin.len());
    let mut label = Vec::with_capacity(MAX_LABEL_LEN);
    let mut absolute = false;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes.get(i).copied().unwrap_or_default();
        match c {
            b'.' => {
                if label.is_empty() {
                    return Err(NameError::EmptyLabel(text.to_string()));
                }
                push_label(&mut out, &label, text)?;
                label.clear();
                if i + 1 == bytes.len() {
                    absolute = true;
                }
                i += 1;
            }
            b'\\' => {
                let digits = bytes
                    .get(i + 1..i + 4)
                    .filter(|d| d.iter().all(u8::is_ascii_digit));
                if let Some(d) = digits {
                    let v = d.iter().fold(0u32, |acc, x| acc * 10 + u32::from(x - b'0'));
                    let v = u8::try_from(v).map_err(|_| NameError::BadEscape(text.to_string()))?;
                    label.push(v);
                    i += 4;
                } else if let Some(&next) = bytes.get(i + 1) {
                    label.push(next);
                    i += 2;
                } else {
                    return Err(NameError::BadEscape(text.to_string()));
                }
            }
            _ => {
                label.push(c);
                i += 1;
            }
        }
    }
    if !label.is_empty() {
        push_label(&mut out, &label, text)?;
    }
    if absolute {
        out.push(0);
    } else {
        out.extend_from_slice(origin);
    }
    if out.len() > MAX_NAME_LEN {
        return Err(NameError::NameTooLong(text.to_string()));
    }
    Ok(out)
}

fn push_label(out: &mut Vec<u8>, label: &[u8], text: &str) -> Result<(), NameError> {
    if label.len() > MAX_LABEL_LEN {
        return Err(NameError::LabelTooLong(text.to_string()));
    }
    out.push(label.len() as u8);
    out.extend_from_slice(label);
    Ok(())
}

/// Presentation form with a trailing dot, escaping what needs it.
pub fn to_text(name: &[u8]) -> String {
    let mut s = String::with_capacity(name.len() + 1);
    for label in labels(name) {
        for &b in label {
            match b {
                b'.' | b'\\' | b'"' | b'(' | b')' | b';' | b'@' | b'$' => {
                    s.push('\\');
                    s.push(b as char);
                }
                0x21..=0x7e => s.push(b as char),
                _ => {
                    let _ = write!(s, "\\{b:03}");
                }
            }
        }
        s.push('.');
    }
    if s.is_empty() {
        s.push('.');
    }
    s
}

/// Iterates over the labels (without length bytes), leftmost first, root excluded.
pub fn labels(name: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let len = usize::from(*name.get(pos)?);
        if len == 0 {
            return None;
        }
        let label = name.get(pos + 1..pos + 1 + len)?;
        pos += 1 + len;
        Some(label)
    })
}

/// Offsets at which each proper-or-improper suffix of `name` starts, the whole name
/// first, the root last.
pub fn suffix_offsets(name: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut pos = Some(0usize);
    std::iter::from_fn(move || {
        let cur = pos?;
        let len = usize::from(*name.get(cur)?);
        pos = if len == 0 { None } else { Some(cur + 1 + len) };
        Some(cur)
    })
}

/// The name with its leftmost label removed, `None` for the root.
pub fn parent(name: &[u8]) -> Option<&[u8]> {
    let len = usize::from(*name.first()?);
    if len == 0 {
        return None;
    }
    name.get(1 + len..)
}

pub fn label_count(name: &[u8]) -> usize {
    labels(name).count()
}

/// True when `name` equals `ancestor` or lies below it (both lowercase wire form).
pub fn is_at_or_below(name: &[u8], ancestor: &[u8]) -> bool {
    suffix_offsets(name).any(|o| name.get(o..) == Some(ancestor))
}

/// The suffix of `name` that has `count` labels (the root has 0).
pub fn suffix_with_labels(name: &[u8], count: usize) -> Option<&[u8]> {
    let total = label_count(name);
    let skip = total.checked_sub(count)?;
    let off = suffix_offsets(name).nth(skip)?;
    name.get(off..)
}

pub fn lowercase(name: &[u8]) -> Vec<u8> {
    name.to_ascii_lowercase()
}

/// Canonical DNS name order (RFC 4034 6.1): labels compared from the root down, each
/// as lowercase octets, a name sorting before the names below it.
pub fn canonical_cmp(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let la: Vec<Vec<u8>> = labels(a).map(<[u8]>::to_ascii_lowercase).collect();
    let lb: Vec<Vec<u8>> = labels(b).map(<[u8]>::to_ascii_lowercase).collect();
    la.iter().rev().cmp(lb.iter().rev())
}

/// True when the leftmost label is `*` (RFC 4592 2.1.1).
pub fn is_wildcard(name: &[u8]) -> bool {
    name.get(..2) == Some(&[1, b'*'])
}

/// `*.<name>`
pub fn wildcard_child(name: &[u8]) -> Vec<u8> {
    let mut w = Vec::with_capacity(name.len() + 2);
    w.extend_from_slice(&[1, b'*']);
    w.extend_from_slice(name);
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Vec<u8> {
        from_text(s, ROOT).unwrap()
    }

    #[test]
    fn canonical_order_is_rfc_4034s_example() {
        // RFC 4034 6.1, in its order.
        let sorted = [
            "example.",
            "a.example.",
            "yljkjljk.a.example.",
            "Z.a.example.",
            "zABC.a.EXAMPLE.",
            "z.example.",
            "\\001.z.example.",
            "*.z.example.",
            "\\200.z.example.",
        ];
        let names: Vec<Vec<u8>> = sorted.iter().map(|s| n(s)).collect();
        let mut shuffled = names.clone();
        shuffled.reverse();
        shuffled.swap(1, 4);
        shuffled.sort_by(|a, b| canonical_cmp(a, b));
        assert_eq!(shuffled, names);
    }

    #[test]
    fn relative_names_take_the_origin_and_absolute_names_do_not() {
        let origin = n("example.com.");
        assert_eq!(from_text("www", &origin).unwrap(), n("www.example.com."));
        assert_eq!(from_text("@", &origin).unwrap(), origin);
        assert_eq!(from_text("a.b.", &origin).unwrap(), n("a.b."));
        assert_eq!(to_text(&n("www.example.com.")), "www.example.com.");
    }

    #[test]
    fn escapes_produce_the_octets_they_name() {
        let name = from_text(r"a\.b.c\065.", ROOT).unwrap();
        assert_eq!(name, vec![3, b'a', b'.', b'b', 2, b'c', b'A', 0]);
        assert_eq!(to_text(&name), r"a\.b.cA.");
        assert!(from_text(r"a\999.", ROOT).is_err());
        assert!(from_text(r"a\", ROOT).is_err());
    }

    #[test]
    fn bad_names_are_rejected() {
        assert!(matches!(
            from_text("a..b.", ROOT),
            Err(NameError::EmptyLabel(_))
        ));
        let long = "a".repeat(64);
        assert!(matches!(
            from_text(&long, ROOT),
            Err(NameError::LabelTooLong(_))
        ));
        let many = "abcdefghi.".repeat(26);
        assert!(matches!(
            from_text(&many, ROOT),
            Err(NameError::NameTooLong(_))
        ));
    }

    #[test]
    fn walking_up_the_tree_is_slicing() {
        let name = n("a.b.c.");
        assert_eq!(parent(&name).unwrap(), n("b.c.").as_slice());
        assert_eq!(label_count(&name), 3);
        assert_eq!(suffix_with_labels(&name, 1).unwrap(), n("c.").as_slice());
        assert_eq!(suffix_with_labels(&name, 0).unwrap(), ROOT);
        assert!(is_at_or_below(&name, &n("b.c.")));
        assert!(!is_at_or_below(&n("xb.c."), &n("b.c.")));
        assert_eq!(suffix_offsets(&name).count(), 4);
    }
}
