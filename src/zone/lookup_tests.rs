//! `lookup::resolve` as a table, without NSD: the cases of `tests/data/diff/queries.txt`
//! over the same zones, each as (qname, qtype) → rcode, AA, and the owners and types of
//! every section. The differential test checks the same answers byte for byte against
//! NSD; this one checks the rules in milliseconds.

use std::path::Path;

use super::lookup::{self, Answer, NoPolicies, Rcode};
use super::{ZoneSet, load_dir};
use crate::iana::{Rtype, rtype_from_str};
use crate::name;

fn zones() -> ZoneSet {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/diff/zones");
    ZoneSet::new(load_dir(&dir).unwrap().zones)
}

/// "owner TYPE" per RRset, with "×n" when it has more than one record.
fn section(rrs: &[lookup::Rr<'_>]) -> String {
    let mut sets: Vec<(String, usize)> = Vec::new();
    for r in rrs {
        let key = format!("{} {}", name::to_text(&name::lowercase(&r.owner)), r.rtype);
        match sets.last_mut() {
            Some((k, n)) if *k == key => *n += 1,
            _ => sets.push((key, 1)),
        }
    }
    sets.iter()
        .map(|(k, n)| {
            if *n > 1 {
                format!("{k}×{n}")
            } else {
                k.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn render(a: &Answer<'_>) -> String {
    format!(
        "{}{} | {} | {} | {}",
        a.rcode,
        if a.aa { " aa" } else { "" },
        section(&a.answer),
        section(&a.authority),
        section(&a.additional)
    )
}

fn ask<'a>(zones: &'a ZoneSet, q: &str, t: &str) -> Answer<'a> {
    let wire = name::from_text(q, name::ROOT).unwrap();
    let wire: &'a [u8] = Box::leak(name::lowercase(&wire).into_boxed_slice());
    lookup::resolve(zones, wire, rtype_from_str(t).unwrap(), &mut NoPolicies)
}

/// (qname as a client writes it, qtype) → "RCODE [aa] | answer | authority | additional".
const TABLE: &[(&str, &str, &str)] = &[
    ("diff.test", "SOA", "NOERROR aa | diff.test. SOA |  | "),
    (
        "diff.test",
        "NS",
        "NOERROR aa | diff.test. NS×2 |  | ns1.diff.test. A, ns1.diff.test. AAAA, ns2.other.test. A",
    ),
    (
        "diff.test",
        "MX",
        "NOERROR aa | diff.test. MX×2 |  | mail.diff.test. A",
    ),
    ("diff.test", "TXT", "NOERROR aa | diff.test. TXT |  | "),
    ("diff.test", "CAA", "NOERROR aa | diff.test. CAA×2 |  | "),
    ("diff.test", "A", "NOERROR aa | diff.test. A |  | "),
    ("diff.test", "AAAA", "NOERROR aa | diff.test. AAAA |  | "),
    ("DiFf.TeSt", "A", "NOERROR aa | diff.test. A |  | "),
    (
        "www.diff.test",
        "A",
        "NOERROR aa | www.diff.test. A×2 |  | ",
    ),
    (
        "WWW.diff.TEST",
        "AAAA",
        "NOERROR aa | www.diff.test. AAAA |  | ",
    ),
    ("www.diff.test", "MX", "NOERROR aa |  | diff.test. SOA | "),
    (
        "nothere.diff.test",
        "A",
        "NXDOMAIN aa |  | diff.test. SOA | ",
    ),
    (
        "nothere.diff.test",
        "AAAA",
        "NXDOMAIN aa |  | diff.test. SOA | ",
    ),
    (
        "deep.nothere.diff.test",
        "TXT",
        "NXDOMAIN aa |  | diff.test. SOA | ",
    ),
    (
        "alias.diff.test",
        "A",
        "NOERROR aa | alias.diff.test. CNAME, chain1.diff.test. CNAME, chain2.diff.test. CNAME, www.diff.test. A×2 |  | ",
    ),
    (
        "alias.diff.test",
        "AAAA",
        "NOERROR aa | alias.diff.test. CNAME, chain1.diff.test. CNAME, chain2.diff.test. CNAME, www.diff.test. AAAA |  | ",
    ),
    (
        "alias.diff.test",
        "CNAME",
        "NOERROR aa | alias.diff.test. CNAME |  | ",
    ),
    (
        "chain2.diff.test",
        "A",
        "NOERROR aa | chain2.diff.test. CNAME, www.diff.test. A×2 |  | ",
    ),
    (
        "cross.diff.test",
        "A",
        "NOERROR aa | cross.diff.test. CNAME, host.other.test. A |  | ",
    ),
    (
        "outside.diff.test",
        "A",
        "NOERROR aa | outside.diff.test. CNAME |  | ",
    ),
    (
        "dangling.diff.test",
        "A",
        "NXDOMAIN aa | dangling.diff.test. CNAME | diff.test. SOA | ",
    ),
    (
        "loop1.diff.test",
        "A",
        "NOERROR aa | loop1.diff.test. CNAME, loop2.diff.test. CNAME |  | ",
    ),
    (
        "anything.wild.diff.test",
        "A",
        "NOERROR aa | anything.wild.diff.test. A |  | ",
    ),
    (
        "anything.wild.diff.test",
        "TXT",
        "NOERROR aa | anything.wild.diff.test. TXT |  | ",
    ),
    (
        "anything.wild.diff.test",
        "MX",
        "NOERROR aa |  | diff.test. SOA | ",
    ),
    (
        "a.b.wild.diff.test",
        "A",
        "NOERROR aa | a.b.wild.diff.test. A |  | ",
    ),
    (
        "host.wild.diff.test",
        "A",
        "NOERROR aa | host.wild.diff.test. A |  | ",
    ),
    (
        "host.wild.diff.test",
        "TXT",
        "NOERROR aa |  | diff.test. SOA | ",
    ),
    (
        "ent.wild.diff.test",
        "A",
        "NOERROR aa |  | diff.test. SOA | ",
    ),
    (
        "x.ent.wild.diff.test",
        "A",
        "NXDOMAIN aa |  | diff.test. SOA | ",
    ),
    (
        "deep.ent.wild.diff.test",
        "A",
        "NOERROR aa | deep.ent.wild.diff.test. A |  | ",
    ),
    (
        "*.wild.diff.test",
        "A",
        "NOERROR aa | *.wild.diff.test. A |  | ",
    ),
    (
        "foo.wc.diff.test",
        "A",
        "NOERROR aa | foo.wc.diff.test. CNAME, www.diff.test. A×2 |  | ",
    ),
    (
        "foo.wc.diff.test",
        "CNAME",
        "NOERROR aa | foo.wc.diff.test. CNAME |  | ",
    ),
    ("b.ent.diff.test", "A", "NOERROR aa |  | diff.test. SOA | "),
    (
        "a.b.ent.diff.test",
        "A",
        "NOERROR aa |  | diff.test. SOA | ",
    ),
    ("ent.diff.test", "TXT", "NOERROR aa |  | diff.test. SOA | "),
    (
        "leaf.a.b.ent.diff.test",
        "A",
        "NOERROR aa | leaf.a.b.ent.diff.test. A |  | ",
    ),
    (
        "dn.diff.test",
        "DNAME",
        "NOERROR aa | dn.diff.test. DNAME |  | ",
    ),
    ("dn.diff.test", "A", "NOERROR aa |  | diff.test. SOA | "),
    (
        "x.dn.diff.test",
        "A",
        "NOERROR aa | dn.diff.test. DNAME, x.dn.diff.test. CNAME, x.other.test. A |  | ",
    ),
    (
        "host.dn.diff.test",
        "A",
        "NOERROR aa | dn.diff.test. DNAME, host.dn.diff.test. CNAME, host.other.test. A |  | ",
    ),
    (
        "www.dn.diff.test",
        "A",
        "NOERROR aa | dn.diff.test. DNAME, www.dn.diff.test. CNAME, www.other.test. CNAME, host.other.test. A |  | ",
    ),
    (
        "missing.dn.diff.test",
        "A",
        "NXDOMAIN aa | dn.diff.test. DNAME, missing.dn.diff.test. CNAME | other.test. SOA | ",
    ),
    (
        "a.dnself.diff.test",
        "A",
        "NXDOMAIN aa | dnself.diff.test. DNAME, a.dnself.diff.test. CNAME | diff.test. SOA | ",
    ),
    (
        "sub.diff.test",
        "A",
        "NOERROR |  | sub.diff.test. NS×2 | ns1.sub.diff.test. A, ns1.sub.diff.test. AAAA",
    ),
    (
        "sub.diff.test",
        "NS",
        "NOERROR |  | sub.diff.test. NS×2 | ns1.sub.diff.test. A, ns1.sub.diff.test. AAAA",
    ),
    (
        "sub.diff.test",
        "DS",
        "NOERROR aa | sub.diff.test. DS |  | ",
    ),
    (
        "host.sub.diff.test",
        "A",
        "NOERROR |  | sub.diff.test. NS×2 | ns1.sub.diff.test. A, ns1.sub.diff.test. AAAA",
    ),
    (
        "deep.host.sub.diff.test",
        "MX",
        "NOERROR |  | sub.diff.test. NS×2 | ns1.sub.diff.test. A, ns1.sub.diff.test. AAAA",
    ),
    (
        "ns1.sub.diff.test",
        "A",
        "NOERROR |  | sub.diff.test. NS×2 | ns1.sub.diff.test. A, ns1.sub.diff.test. AAAA",
    ),
    ("nods.diff.test", "DS", "NOERROR aa |  | diff.test. SOA | "),
    ("nods.diff.test", "A", "NOERROR |  | nods.diff.test. NS | "),
    (
        "www.nods.diff.test",
        "A",
        "NOERROR |  | nods.diff.test. NS | ",
    ),
    ("www.diff.test", "DS", "NOERROR aa |  | diff.test. SOA | "),
    (
        "_sip._tcp.diff.test",
        "SRV",
        "NOERROR aa | _sip._tcp.diff.test. SRV×2 |  | mail.diff.test. A",
    ),
    (
        "naptr.diff.test",
        "NAPTR",
        "NOERROR aa | naptr.diff.test. NAPTR |  | ",
    ),
    (
        "ssh.diff.test",
        "SSHFP",
        "NOERROR aa | ssh.diff.test. SSHFP |  | ",
    ),
    (
        "_443._tcp.diff.test",
        "TLSA",
        "NOERROR aa | _443._tcp.diff.test. TLSA |  | ",
    ),
    (
        "svc.diff.test",
        "HTTPS",
        "NOERROR aa | svc.diff.test. HTTPS |  | ",
    ),
    (
        "svc.diff.test",
        "SVCB",
        "NOERROR aa | svc.diff.test. SVCB |  | ",
    ),
    (
        "ptr.diff.test",
        "PTR",
        "NOERROR aa | ptr.diff.test. PTR |  | ",
    ),
    (
        "unknown.diff.test",
        "TYPE65534",
        "NOERROR aa | unknown.diff.test. TYPE65534 |  | ",
    ),
    (
        "escaped.diff.test",
        "TXT",
        "NOERROR aa | escaped.diff.test. TXT |  | ",
    ),
    (
        "big.diff.test",
        "TXT",
        "NOERROR aa | big.diff.test. TXT×40 |  | ",
    ),
    (
        "big.diff.test",
        "TXT",
        "NOERROR aa | big.diff.test. TXT×40 |  | ",
    ),
    (
        "big.diff.test",
        "TXT",
        "NOERROR aa | big.diff.test. TXT×40 |  | ",
    ),
    (
        "big.diff.test",
        "TXT",
        "NOERROR aa | big.diff.test. TXT×40 |  | ",
    ),
    ("other.test", "SOA", "NOERROR aa | other.test. SOA |  | "),
    (
        "www.other.test",
        "A",
        "NOERROR aa | www.other.test. CNAME, host.other.test. A |  | ",
    ),
    ("nx.other.test", "A", "NXDOMAIN aa |  | other.test. SOA | "),
    ("example.org", "A", "REFUSED |  |  | "),
    ("test", "A", "REFUSED |  |  | "),
    (".", "NS", "REFUSED |  |  | "),
    ("diff.test", "ANY", "NOERROR aa | diff.test. A |  | "),
    (
        "www.diff.test",
        "ANY",
        "NOERROR aa | www.diff.test. A×2 |  | ",
    ),
    (
        "alias.diff.test",
        "ANY",
        "NOERROR aa | alias.diff.test. CNAME |  | ",
    ),
];

#[test]
fn every_rule_of_the_differential_set_answers_as_the_rfcs_say() {
    let z = zones();
    let mut wrong = Vec::new();
    for (q, t, want) in TABLE {
        let fqdn = if q.ends_with('.') {
            q.to_string()
        } else {
            format!("{q}.")
        };
        let got = render(&ask(&z, &fqdn, t));
        if got != *want {
            wrong.push(format!("{q} {t}:\n  want {want}\n  got  {got}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_table_covers_every_query_of_the_differential_set() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/diff/queries.txt"),
    )
    .unwrap();
    for l in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let mut w = l.split_whitespace();
        let (q, t) = (w.next().unwrap_or(""), w.next().unwrap_or(""));
        assert!(
            TABLE.iter().any(|(tq, tt, _)| *tq == q && *tt == t),
            "{q} {t} is in queries.txt but not in the table"
        );
    }
}

#[test]
fn a_name_outside_every_zone_is_refused_without_aa() {
    let z = zones();
    let a = ask(&z, "example.org.", "A");
    assert_eq!((a.rcode, a.aa), (Rcode::REFUSED, false));
    let a = ask(&z, "www.diff.test.", "A");
    assert_eq!(a.answer.first().map(|r| r.rtype), Some(Rtype::A));
    assert_eq!(a.zone, Some("diff.test."));
}
