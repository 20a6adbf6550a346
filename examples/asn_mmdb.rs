//! Builds an ASN database in MaxMind's GeoLite2-ASN schema (`autonomous_system_number`,
//! `autonomous_system_organization`) from ip-location-db's ASN CSV files
//! (`start,end,asn,organization`, inclusive ranges). `geoip/refresh-asn.sh` runs it:
//!
//! ```text
//! cargo run --release --example asn_mmdb -- OUT.mmdb asn-ipv4.csv asn-ipv6.csv
//! ```
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::IpAddr;

use mmdb_writer::{Value, Writer};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (out, inputs) = args.split_first().expect("usage: asn_mmdb OUT.mmdb CSV...");
    let mut w = Writer::new("GeoLite2-ASN");
    let (mut rows, mut skipped) = (0usize, 0usize);
    for path in inputs {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        for (n, line) in text.lines().enumerate() {
            // The organization may be quoted and hold commas: split the first three off.
            let mut it = line.splitn(4, ',');
            let (Some(start), Some(end), Some(asn), org) =
                (it.next(), it.next(), it.next(), it.next())
            else {
                panic!("{path}:{}: not start,end,asn,organization", n + 1);
            };
            let start: IpAddr = start
                .parse()
                .unwrap_or_else(|_| panic!("{path}:{}: {start:?}", n + 1));
            let end: IpAddr = end
                .parse()
                .unwrap_or_else(|_| panic!("{path}:{}: {end:?}", n + 1));
            let asn: u32 = asn
                .parse()
                .unwrap_or_else(|_| panic!("{path}:{}: {asn:?}", n + 1));
            let org = org
                .unwrap_or("")
                .trim()
                .trim_matches('"')
                .replace("\"\"", "\"");
            let value = Value::map([
                ("autonomous_system_number", Value::U32(asn)),
                ("autonomous_system_organization", Value::from(org.as_str())),
            ]);
            // IPv6 ranges inside the IPv4 alias subtrees (6to4, Teredo) are the IPv4
            // data's: the writer refuses them, and they are skipped.
            match w.insert_range(start, end, &value) {
                Ok(()) => rows += 1,
                Err(e) => {
                    skipped += 1;
                    eprintln!("{path}:{}: skipped: {e}", n + 1);
                }
            }
        }
    }
    std::fs::write(out, w.to_bytes().expect("encode")).unwrap_or_else(|e| panic!("{out}: {e}"));
    eprintln!("{out}: {rows} ranges, {skipped} skipped");
}
