//! Authenticated gossip datagrams: chitchat has no authentication of its own, so its
//! UDP socket is replaced by one that wraps every serialized envelope:
//!
//! ```text
//!  "MRD2" | boot: u64 | seq: u64 | to: 16-byte IP + u16 port | chitchat envelope
//!         | HMAC-SHA256 (32 bytes) of all before
//! ```
//!
//! `to` is the gossip address the sender sent it to: a receiver accepts only datagrams
//! addressed to it (its listen or advertised address), so one captured on its way to
//! ns2 is refused by ns3 (`misdirected`), and replayed to ns2 it is a replay.
//!
//! `boot` is the sender's start time in Unix nanoseconds (one per run of an instance) and
//! `seq` counts its datagrams, so a receiver drops a replay, from whatever source address
//! it comes: a sequence number of that boot seen before, or older than the last 64 (the
//! window IPsec uses). The check compares a sender's numbers with its own earlier ones
//! only, so it does not depend on the instances' clocks agreeing. Gossip is
//! authenticated, not encrypted: what instances say to each other is readable on the
//! path, as it is with memberlist without its keyring. Every datagram that fails is dropped before
//! chitchat sees it and counted by reason; none is ever applied. (What chitchat cannot
//! decode of an authentic one it drops and logs itself.)

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use async_trait::async_trait;
use chitchat::ChitchatEnvelope;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use ring::hmac;
use tokio::net::UdpSocket;
use tracing::{debug, warn};

const MAGIC: &[u8; 4] = b"MRD2";
const HEADER: usize = 4 + 8 + 8 + 18;
const TAG: usize = 32;
/// The largest UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65_507;
/// Sender runs remembered for replay checks; more (only possible with the key) starts over.
const MAX_SENDERS: usize = 4096;

/// Why a datagram was dropped: the `reason` label of `meridian_cluster_auth_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// Too short, or not our framing.
    Malformed,
    /// The HMAC does not match: another key, or altered on the way.
    BadMac,
    /// Authentic but seen before (or older than the replay window).
    Replayed,
    /// Authentic, but sent to another instance.
    Misdirected,
}

impl Drop {
    pub const ALL: [Drop; 4] = [
        Drop::Malformed,
        Drop::BadMac,
        Drop::Replayed,
        Drop::Misdirected,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Drop::Malformed => "malformed",
            Drop::BadMac => "bad_mac",
            Drop::Replayed => "replayed",
            Drop::Misdirected => "misdirected",
        }
    }

    fn index(self) -> usize {
        match self {
            Drop::Malformed => 0,
            Drop::BadMac => 1,
            Drop::Replayed => 2,
            Drop::Misdirected => 3,
        }
    }
}

/// An address as the datagram carries it: the IP as 16 bytes (IPv4 mapped), the port.
fn address_bytes(a: SocketAddr) -> [u8; 18] {
    let ip = match a.ip() {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        std::net::IpAddr::V6(v6) => v6,
    };
    let mut out = [0u8; 18];
    for (o, b) in out
        .iter_mut()
        .zip(ip.octets().iter().chain(&a.port().to_be_bytes()))
    {
        *o = *b;
    }
    out
}

/// Gossip traffic counters, read by the metrics export and the status page.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent_bytes: AtomicU64,
    pub sent_datagrams: AtomicU64,
    pub received_bytes: AtomicU64,
    pub received_datagrams: AtomicU64,
    dropped: [AtomicU64; 4],
}

impl Counters {
    pub fn dropped(&self, why: Drop) -> u64 {
        self.dropped
            .get(why.index())
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    fn count(&self, why: Drop) {
        if let Some(c) = self.dropped.get(why.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Seal and open datagrams with one key. Pure apart from the replay memory.
pub struct Sealer {
    key: hmac::Key,
    boot: u64,
    seq: u64,
    /// By sender boot.
    seen: HashMap<u64, Replay>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Replay {
    top: u64,
    /// Bit i: `top - i` was seen.
    window: u64,
}

impl Replay {
    /// Whether `seq` is new; records it if so.
    fn admit(&mut self, seq: u64) -> bool {
        if seq > self.top {
            let shift = seq - self.top;
            self.window = if shift >= 64 { 0 } else { self.window << shift };
            self.window |= 1;
            self.top = seq;
            return true;
        }
        let age = self.top - seq;
        if age >= 64 || self.window & (1 << age) != 0 {
            return false;
        }
        self.window |= 1 << age;
        true
    }
}

impl Sealer {
    pub fn new(secret: &[u8], boot: u64) -> Sealer {
        Sealer {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            boot,
            seq: 0,
            seen: HashMap::new(),
        }
    }

    /// `payload` framed and tagged for the instance at `to`.
    pub fn seal(&mut self, payload: &[u8], to: SocketAddr) -> Vec<u8> {
        self.seq += 1;
        let mut out = Vec::with_capacity(HEADER + payload.len() + TAG);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.boot.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&address_bytes(to));
        out.extend_from_slice(payload);
        let tag = hmac::sign(&self.key, &out);
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// The payload of an authentic datagram addressed to one of `me` and not seen
    /// before.
    pub fn open<'a>(&mut self, datagram: &'a [u8], me: &[SocketAddr]) -> Result<&'a [u8], Drop> {
        if datagram.len() < HEADER + TAG || datagram.get(..4) != Some(MAGIC.as_slice()) {
            return Err(Drop::Malformed);
        }
        let (signed, tag) = datagram.split_at(datagram.len() - TAG);
        // Constant-time comparison inside ring.
        hmac::verify(&self.key, signed, tag).map_err(|_| Drop::BadMac)?;
        let word = |at: usize| -> u64 {
            let mut b = [0u8; 8];
            if let Some(s) = signed.get(at..at + 8) {
                b.copy_from_slice(s);
            }
            u64::from_be_bytes(b)
        };
        let to = signed.get(20..HEADER).unwrap_or_default();
        if !me.iter().any(|a| address_bytes(*a)[..] == *to) {
            return Err(Drop::Misdirected);
        }
        let (boot, seq) = (word(4), word(12));
        if self.seen.len() >= MAX_SENDERS && !self.seen.contains_key(&boot) {
            self.seen.clear();
        }
        let fresh = self.seen.entry(boot).or_default().admit(seq);
        if !fresh {
            return Err(Drop::Replayed);
        }
        Ok(signed.get(HEADER..).unwrap_or_default())
    }
}

/// A chitchat transport whose sockets authenticate every datagram.
///
/// chitchat 0.13 keeps its envelope's encoding private, so the wrapping happens one hop
/// out: chitchat's own UDP socket is bound on an ephemeral loopback port and talks
/// only to *relays*, one loopback socket per remote peer. A relay seals what chitchat
/// sends it and sends it from the public gossip socket to its peer; what arrives on the
/// public socket is opened and handed to chitchat from that peer's relay, so chitchat
/// sees the relay's address, which the socket below translates back to the peer's.
/// Datagrams reaching the loopback sockets from anything but chitchat or a relay are
/// dropped.
pub struct AuthTransport {
    pub secret: Vec<u8>,
    pub boot: u64,
    pub counters: Arc<Counters>,
    /// The address peers send to (`cluster.advertise`).
    pub advertise: SocketAddr,
}

/// Relays at most this many peers (only peers that authenticated, or that chitchat
/// itself gossips to, get one); past it the least recently used relay is freed, so
/// address churn (pods, DHCP) never leaves a new peer unrelayed.
const MAX_RELAYS: usize = 1024;

/// One peer's relay.
struct Relay {
    socket: Arc<UdpSocket>,
    addr: SocketAddr,
    /// `Relays::clock` when last used.
    used: AtomicU64,
    task: tokio::task::JoinHandle<()>,
}

struct Relays {
    public: Arc<UdpSocket>,
    /// chitchat's own socket.
    inner: SocketAddr,
    /// The addresses datagrams for this instance are sent to (listen, advertise).
    me: Vec<SocketAddr>,
    sealer: Mutex<Sealer>,
    counters: Arc<Counters>,
    /// Peer → its relay; relay address → peer.
    by_peer: Mutex<HashMap<SocketAddr, Relay>>,
    by_relay: Mutex<HashMap<SocketAddr, SocketAddr>>,
    /// Ticks at each relay use: an order, not a time.
    clock: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Relays {
    /// Relays in use.
    fn len(&self) -> usize {
        lock(&self.by_peer).len()
    }

    fn found(&self, r: &Relay) -> (Arc<UdpSocket>, SocketAddr) {
        r.used.store(
            self.clock.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        (r.socket.clone(), r.addr)
    }

    /// Frees the least recently used relay.
    fn evict_one(&self) {
        let mut by_peer = lock(&self.by_peer);
        let oldest = by_peer
            .iter()
            .min_by_key(|(_, r)| r.used.load(Ordering::Relaxed))
            .map(|(p, _)| *p);
        if let Some(r) = oldest.and_then(|p| by_peer.remove(&p)) {
            r.task.abort();
            lock(&self.by_relay).remove(&r.addr);
        }
    }

    /// The relay for `peer`, started on first use.
    async fn relay(self: &Arc<Self>, peer: SocketAddr) -> Option<(Arc<UdpSocket>, SocketAddr)> {
        if let Some(r) = lock(&self.by_peer).get(&peer) {
            return Some(self.found(r));
        }
        while self.len() >= MAX_RELAYS {
            self.evict_one();
        }
        let socket = Arc::new(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.ok()?);
        let addr = socket.local_addr().ok()?;
        let me = self.clone();
        let relay = socket.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            loop {
                let Ok((n, from)) = relay.recv_from(&mut buf).await else {
                    continue;
                };
                if from != me.inner {
                    continue;
                }
                let Some(payload) = buf.get(..n) else {
                    continue;
                };
                let datagram = lock(&me.sealer).seal(payload, peer);
                if datagram.len() > MAX_DATAGRAM {
                    warn!(
                        bytes = datagram.len(),
                        "gossip message too large for one datagram: not sent"
                    );
                    continue;
                }
                match me.public.send_to(&datagram, peer).await {
                    Ok(n) => {
                        me.counters
                            .sent_bytes
                            .fetch_add(n as u64, Ordering::Relaxed);
                        me.counters.sent_datagrams.fetch_add(1, Ordering::Relaxed);
                    }
                    // A peer that is down is what gossip is for.
                    Err(e) => debug!(%peer, error = %e, "gossip send failed"),
                }
            }
        });
        let mut by_peer = lock(&self.by_peer);
        if let Some(r) = by_peer.get(&peer) {
            task.abort(); // another task started one meanwhile
            return Some(self.found(r));
        }
        by_peer.insert(
            peer,
            Relay {
                socket: socket.clone(),
                addr,
                used: AtomicU64::new(self.clock.fetch_add(1, Ordering::Relaxed)),
                task,
            },
        );
        lock(&self.by_relay).insert(addr, peer);
        Some((socket, addr))
    }

    /// Opens what arrives on the public socket and hands it to chitchat.
    async fn receive(self: Arc<Self>) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let (n, from) = match self.public.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(e) => {
                    debug!(error = %e, "gossip receive error");
                    continue;
                }
            };
            let Some(datagram) = buf.get(..n) else {
                continue;
            };
            self.counters
                .received_bytes
                .fetch_add(n as u64, Ordering::Relaxed);
            self.counters
                .received_datagrams
                .fetch_add(1, Ordering::Relaxed);
            let opened = lock(&self.sealer)
                .open(datagram, &self.me)
                .map(<[u8]>::to_vec);
            match opened {
                Ok(payload) => {
                    if let Some((relay, _)) = self.relay(from).await {
                        let _ = relay.send_to(&payload, self.inner).await;
                    }
                }
                Err(why) => {
                    self.counters.count(why);
                    debug!(%from, reason = why.label(), "gossip datagram dropped");
                }
            }
        }
    }
}

#[async_trait]
impl Transport for AuthTransport {
    async fn open(&self, listen: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let public = UdpSocket::bind(listen)
            .await
            .with_context(|| format!("cannot listen for gossip on {listen}/UDP"))?;
        let inner = chitchat::transport::UdpTransport
            .open(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await?;
        let mut me = vec![self.advertise];
        if let Ok(bound) = public.local_addr()
            && !bound.ip().is_unspecified()
        {
            me.push(bound);
        }
        let relays = Arc::new(Relays {
            public: Arc::new(public),
            inner: inner.local_addr()?,
            me,
            sealer: Mutex::new(Sealer::new(&self.secret, self.boot)),
            counters: self.counters.clone(),
            by_peer: Mutex::new(HashMap::new()),
            by_relay: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(0),
        });
        let receiver = tokio::spawn(relays.clone().receive());
        Ok(Box::new(AuthSocket {
            listen,
            inner,
            relays,
            receiver,
        }))
    }
}

struct AuthSocket {
    listen: SocketAddr,
    inner: Box<dyn Socket>,
    relays: Arc<Relays>,
    receiver: tokio::task::JoinHandle<()>,
}

impl std::ops::Drop for AuthSocket {
    fn drop(&mut self) {
        self.receiver.abort();
        for r in lock(&self.relays.by_peer).values() {
            r.task.abort();
        }
    }
}

#[async_trait]
impl Socket for AuthSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.relays.public.local_addr().unwrap_or(self.listen))
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        match self.relays.relay(to).await {
            Some((_, relay)) => self.inner.send(relay, envelope).await,
            None => Ok(SendOutcome { num_bytes_sent: 0 }),
        }
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            let mut got = self.inner.recv().await?;
            let peer = lock(&self.relays.by_relay).get(&got.from_addr).copied();
            match peer {
                Some(p) => {
                    got.from_addr = p;
                    return Ok(got);
                }
                // Sent to the loopback socket by something else on this host.
                None => self.relays.counters.count(Drop::Malformed),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_key_holder_is_heard_and_only_once() {
        let b_addr: SocketAddr = "192.0.2.2:7946".parse().unwrap();
        let me = [b_addr];
        let mut a = Sealer::new(b"0123456789abcdef-shared", 10);
        let mut b = Sealer::new(b"0123456789abcdef-shared", 20);
        let mut other = Sealer::new(b"another key of sixteen", 10);
        let d1 = a.seal(b"hello", b_addr);
        assert_eq!(b.open(&d1, &me), Ok(&b"hello"[..]));
        assert_eq!(
            b.open(&d1, &me),
            Err(Drop::Replayed),
            "the same datagram again"
        );
        let forged = other.seal(b"hello", b_addr);
        assert_eq!(b.open(&forged, &me), Err(Drop::BadMac));
        let mut altered = a.seal(b"hello", b_addr);
        if let Some(x) = altered.get_mut(HEADER) {
            *x ^= 1;
        }
        assert_eq!(b.open(&altered, &me), Err(Drop::BadMac));
        for junk in [
            &b""[..],
            b"MRD2",
            b"junk that is long enough to be framed as ours maybe",
        ] {
            assert_eq!(b.open(junk, &me), Err(Drop::Malformed));
        }
        // Reordering within the window is fine, a replay of any of them is not.
        let d2 = a.seal(b"2", b_addr);
        let d3 = a.seal(b"3", b_addr);
        assert!(b.open(&d3, &me).is_ok());
        assert!(b.open(&d2, &me).is_ok());
        assert_eq!(b.open(&d2, &me), Err(Drop::Replayed));
        // A restart of the sender (another boot) is heard, and a replay is dropped
        // whichever address it comes from (the address is not part of the check).
        let mut restarted = Sealer::new(b"0123456789abcdef-shared", 11);
        let again = restarted.seal(b"again", b_addr);
        assert!(b.open(&again, &me).is_ok());
        assert_eq!(b.open(&again, &me), Err(Drop::Replayed));
    }

    #[test]
    fn the_replay_window_is_sixty_four_datagrams() {
        let mut r = Replay::default();
        assert!(r.admit(100));
        assert!(r.admit(37), "63 behind");
        assert!(!r.admit(36), "64 behind");
        assert!(r.admit(300));
        assert!(!r.admit(100), "fell out of the window");
    }

    #[test]
    fn a_datagram_for_one_instance_is_refused_by_another() {
        let ns2: SocketAddr = "192.0.2.2:7946".parse().unwrap();
        let ns3: SocketAddr = "192.0.2.3:7946".parse().unwrap();
        let mut ns1 = Sealer::new(b"0123456789abcdef-shared", 1);
        let mut at_ns2 = Sealer::new(b"0123456789abcdef-shared", 2);
        let mut at_ns3 = Sealer::new(b"0123456789abcdef-shared", 3);
        let to_ns2 = ns1.seal(b"verdicts", ns2);
        // Captured on its way to ns2 and sent to ns3: refused, whatever its sequence.
        assert_eq!(at_ns3.open(&to_ns2, &[ns3]), Err(Drop::Misdirected));
        assert_eq!(at_ns2.open(&to_ns2, &[ns2]), Ok(&b"verdicts"[..]));
        assert_eq!(at_ns2.open(&to_ns2, &[ns2]), Err(Drop::Replayed));
        // Same IP, another port is another instance too.
        let other_port: SocketAddr = "192.0.2.2:7947".parse().unwrap();
        let d = ns1.seal(b"x", other_port);
        assert_eq!(at_ns2.open(&d, &[ns2]), Err(Drop::Misdirected));
    }

    /// 5 000 authentic senders from as many addresses (address churn, or a key holder
    /// misbehaving): the relay table stays bounded, and the newest sender is relayed.
    #[tokio::test]
    async fn relays_stay_bounded_and_new_peers_are_still_relayed() {
        let public = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let me = public.local_addr().unwrap();
        let inner = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let relays = Arc::new(Relays {
            public,
            inner: inner.local_addr().unwrap(),
            me: vec![me],
            sealer: Mutex::new(Sealer::new(b"0123456789abcdef-shared", 1)),
            counters: Arc::new(Counters::default()),
            by_peer: Mutex::new(HashMap::new()),
            by_relay: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(0),
        });
        let receiver = tokio::spawn(relays.clone().receive());
        let mut sender = Sealer::new(b"0123456789abcdef-shared", 9);
        let mut last = None;
        for i in 0..5000u32 {
            let source: std::net::Ipv4Addr = (0x7F02_0000 + i + 1).into();
            let s = UdpSocket::bind((source, 0)).await.unwrap();
            s.send_to(&sender.seal(b"hi", me), me).await.unwrap();
            last = Some(s.local_addr().unwrap());
            if i % 200 == 0 {
                // Let the receiver keep up (a datagram queue is not what is tested).
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        let last = last.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !lock(&relays.by_peer).contains_key(&last) && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(relays.len() <= MAX_RELAYS, "{} relays", relays.len());
        assert!(
            lock(&relays.by_peer).contains_key(&last),
            "the newest peer is relayed"
        );
        assert_eq!(
            lock(&relays.by_relay).len(),
            relays.len(),
            "both maps agree"
        );
        receiver.abort();
    }
}
