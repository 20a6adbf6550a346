//! NOTIFY (RFC 1996) to the secondaries in `transfer.notify`: at startup and whenever a
//! reload changes a zone's serial, so they transfer at once instead of at their refresh
//! timer. Signed with TSIG when an allow rule covering the secondary's address names a
//! key (what NSD's `allow-notify: ADDR KEY` and BIND's `allow-notify { key K; }` check).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use domain::base::iana::{Class, Opcode};
use domain::base::name::Name;
use domain::base::{Message, MessageBuilder};
use domain::rdata::tsig::Time48;
use domain::tsig::{ClientTransaction, Key};
use tracing::{info, warn};

use crate::iana::{Rcode, Rtype};
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

/// RFC 1996 3.6: retry an unanswered NOTIFY; five tries, two seconds apart.
const TRIES: u32 = 5;
const WAIT: Duration = Duration::from_secs(2);

/// Zones of `new` whose serial differs from `old`'s (all of them when there is no old
/// snapshot): apex (wire), display name, serial.
pub fn changed(old: Option<&Snapshot>, new: &Snapshot) -> Vec<(Box<[u8]>, String, u32)> {
    new.zones
        .iter()
        .filter_map(|z| {
            let serial = z.serial()?;
            let before = old
                .and_then(|o| o.zones.iter().find(|p| p.apex == z.apex))
                .and_then(|p| p.serial());
            (before != Some(serial)).then(|| (z.apex.clone(), z.display.to_string(), serial))
        })
        .collect()
}

/// Sends the NOTIFYs for what changed between `old` and `new`, in the background.
pub fn spawn(old: Option<&Snapshot>, new: &Snapshot, metrics: Arc<Metrics>) {
    let Some(config) = new.transfer.clone() else {
        return;
    };
    if config.notify.is_empty() {
        return;
    }
    for (apex, display, serial) in changed(old, new) {
        for &target in &config.notify {
            let key = config
                .rules_for(target.ip())
                .find_map(|r| r.key.as_deref())
                .and_then(|k| config.key(k))
                .cloned();
            let (apex, zone_name, metrics) = (apex.clone(), display.clone(), metrics.clone());
            tokio::spawn(async move {
                let acked = send(&apex, target, key.as_ref()).await;
                let result = match &acked {
                    Ok(()) => "acked",
                    Err(_) => "failed",
                };
                metrics
                    .notifies
                    .with_label_values(&[zone_name.as_str(), result])
                    .inc();
                match acked {
                    Ok(()) => {
                        info!(zone = %zone_name, serial, secondary = %target, "notify acknowledged")
                    }
                    Err(e) => {
                        warn!(zone = %zone_name, serial, secondary = %target, error = %e, "notify failed")
                    }
                }
            });
        }
    }
}

async fn send(apex: &[u8], target: SocketAddr, key: Option<&Key>) -> Result<(), String> {
    let bind: SocketAddr = if target.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| format!("socket: {e}"))?;
    let mut last = String::from("no answer");
    for _ in 0..TRIES {
        let id: u16 = rand_id();
        let (request, tx) = build(apex, id, key)?;
        socket
            .send_to(&request, target)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut buf = vec![0u8; 4096];
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await;
            let Ok(Ok((n, from))) = got else { break };
            if from != target {
                continue;
            }
            let Ok(mut answer) = Message::from_octets(buf.get(..n).unwrap_or_default().to_vec())
            else {
                continue;
            };
            let h = answer.header();
            if h.id() != id || !h.qr() || h.opcode() != Opcode::NOTIFY {
                continue;
            }
            if h.rcode() != Rcode::NOERROR {
                return Err(format!("answered {}", h.rcode()));
            }
            if let Some(tx) = &tx {
                tx.answer(&mut answer, Time48::now())
                    .map_err(|e| format!("answer's TSIG: {e}"))?;
            }
            return Ok(());
        }
        last = format!("no answer in {} tries", TRIES);
    }
    Err(last)
}

type Built = (Vec<u8>, Option<ClientTransaction<Key>>);

fn build(apex: &[u8], id: u16, key: Option<&Key>) -> Result<Built, String> {
    let name = Name::from_slice(apex).map_err(|e| format!("zone name: {e}"))?;
    let mut msg = MessageBuilder::new_vec();
    msg.header_mut().set_id(id);
    msg.header_mut().set_opcode(Opcode::NOTIFY);
    msg.header_mut().set_aa(true);
    let mut q = msg.question();
    q.push((name, Rtype::SOA, Class::IN))
        .map_err(|e| format!("compose: {e}"))?;
    let mut additional = q.additional();
    let tx = match key {
        Some(k) => Some(
            ClientTransaction::request(k.clone(), &mut additional, Time48::now())
                .map_err(|e| format!("sign: {e}"))?,
        ),
        None => None,
    };
    Ok((additional.finish(), tx))
}

/// A message ID nobody on the path can guess (RFC 5452 spirit; NOTIFY answers are
/// matched on it).
fn rand_id() -> u16 {
    let mut b = [0u8; 2];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u16::from_be_bytes(b)
}
