//! Sockets. UDP: several SO_REUSEPORT sockets per address (one per core by default),
//! each served by one OS thread looping recv → handle → send in batches with buffers it
//! reuses, so the kernel spreads load and no task is spawned per datagram. TCP: RFC 1035 4.2.2 / RFC
//! 7766 framing, several queries per connection, idle timeout, a connection cap.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};
use smallvec::SmallVec;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::handler::{self, AnswerTally, Transport};
use super::request::{self, Parsed};
use super::response;
use super::rrl::{Action, Kind, Rrl};
use super::transfer;
use crate::config::DnsConfig;
use crate::health::HealthView;
use crate::iana::Rtype;
use crate::metrics::{Metrics, QueryCounters};
use crate::snapshot::{Shared, Snapshot};

pub type SharedHealth = Arc<arc_swap::ArcSwap<HealthView>>;

fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_port(true)?;
    never_fragment(&socket, addr);
    // Bursts queue in the kernel rather than being dropped while a core is busy.
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.bind(&addr.into())?;
    // Blocking, served by a thread of its own; the timeout lets it notice shutdown.
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok(socket.into())
}

/// UDP answers are never fragmented (RFC 9715; BIND does the same). DF is set and the
/// path MTU that the kernel learns from ICMP is ignored ("probe" mode), so a forged
/// "fragmentation needed" cannot make us fragment answers, the opening of the off-path
/// fragment-injection attacks on resolvers. An answer too big for the interface is sent
/// truncated instead (`send_one`); answers stay within `edns_udp_size` (1232 by default)
/// anyway. DF also spares the kernel choosing an IP ID per datagram: 3.5-9 % less system
/// time per answer in the bench (bench/README.md, fourth round).
fn never_fragment(socket: &Socket, addr: SocketAddr) {
    use rustix::net::sockopt::{self, Ipv4PathMtuDiscovery, Ipv6PathMtuDiscovery};
    let set = if addr.is_ipv6() {
        sockopt::set_ipv6_mtu_discover(socket, Ipv6PathMtuDiscovery::PROBE).and_then(|()| {
            nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::Ipv6DontFrag, &true)
                .map_err(|e| rustix::io::Errno::from_raw_os_error(e as i32))
        })
    } else {
        sockopt::set_ip_mtu_discover(socket, Ipv4PathMtuDiscovery::PROBE)
    };
    if let Err(e) = set {
        warn!(%addr, error = %e, "cannot turn off fragmentation of UDP answers; serving with the kernel's default");
    }
}

fn tcp_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

pub struct Bound {
    udp: Vec<std::net::UdpSocket>,
    tcp: Vec<TcpListener>,
}

/// Binds every socket up front so that a port in use fails `serve` before it logs ready.
pub fn bind(config: &DnsConfig) -> std::io::Result<Bound> {
    let per_addr = if config.udp_sockets_per_address == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        config.udp_sockets_per_address
    };
    let mut udp = Vec::new();
    let mut tcp = Vec::new();
    for &addr in &config.listen {
        let first = udp_socket(addr).map_err(|e| with_addr(e, "UDP", addr))?;
        // Port 0 asks the kernel for a port; the other sockets must share the one it gave.
        let addr = first.local_addr()?;
        udp.push(first);
        for _ in 1..per_addr {
            udp.push(udp_socket(addr).map_err(|e| with_addr(e, "UDP", addr))?);
        }
        tcp.push(tcp_listener(addr).map_err(|e| with_addr(e, "TCP", addr))?);
    }
    Ok(Bound { udp, tcp })
}

fn with_addr(e: std::io::Error, what: &str, addr: SocketAddr) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("cannot listen on {what} {addr}: {e}"))
}

impl Bound {
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.tcp
            .iter()
            .filter_map(|t| t.local_addr().ok())
            .collect()
    }
}

/// What every socket task needs: the published snapshot and health view, and metrics.
#[derive(Clone)]
pub struct Ctx {
    pub shared: Shared,
    pub health: SharedHealth,
    pub metrics: Arc<Metrics>,
    /// UDP response rate limiting; `None`: off.
    pub rrl: Option<Arc<Rrl>>,
}

impl Ctx {
    /// One query: the handler against the published snapshot and health view, and the
    /// query counter. Policy answers go to `tally`, to be applied with `snapshot`.
    #[allow(clippy::too_many_arguments)]
    fn answer_with(
        &self,
        snapshot: &Snapshot,
        view: &HealthView,
        parsed: Parsed<'_>,
        peer: std::net::IpAddr,
        transport: Transport,
        counters: &mut QueryCounters,
        tally: &mut AnswerTally,
        gate: Option<&mut handler::RrlGate<'_>>,
        out: &mut Vec<u8>,
    ) -> Option<Option<(Action, Kind)>> {
        let h = handler::handle_gated(
            snapshot,
            view,
            parsed,
            peer,
            transport,
            Some(tally),
            gate,
            out,
        )?;
        counters.inc(
            &self.metrics,
            h.zone.unwrap_or("none"),
            h.qtype,
            h.rcode,
            transport,
        );
        Some(h.rrl)
    }
}

/// Serves until `shutdown` turns true, then lets open TCP exchanges finish (bounded).
pub async fn run(bound: Bound, ctx: Ctx, config: DnsConfig, mut shutdown: watch::Receiver<bool>) {
    let mut tasks = JoinSet::new();
    // UDP: one OS thread per SO_REUSEPORT socket, blocking receive and send. The common
    // case (one datagram in, one out) then costs two system calls and no task wake-ups.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut threads = Vec::new();
    for (i, socket) in bound.udp.into_iter().enumerate() {
        let (ctx, stop) = (ctx.clone(), stop.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("dns-udp-{i}"))
            .spawn(move || udp_loop(socket, ctx, stop));
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => warn!(error = %e, "cannot start a UDP thread"),
        }
    }
    let conns = Arc::new(Semaphore::new(config.tcp_max_connections));
    for listener in bound.tcp {
        tasks.spawn(tcp_accept(
            listener,
            ctx.clone(),
            conns.clone(),
            (config.tcp_idle_timeout, config.tcp_max_queries),
            shutdown.clone(),
        ));
    }
    let _ = shutdown.wait_for(|s| *s).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    let _ = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await;
    // Give in-flight TCP exchanges a moment to complete before the runtime goes away.
    let all = u32::try_from(config.tcp_max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(Duration::from_secs(2), conns.acquire_many(all)).await;
}

/// Datagrams read and written per system call.
const BATCH: usize = 32;
/// Queries are small; a longer datagram is cut and fails to parse (FORMERR or dropped).
const MAX_BATCHED_REQUEST: usize = 4096;

fn to_std(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6((*v6).into()))
}

/// One socket's loop: `recvmmsg` takes every datagram waiting (at least one), each is
/// answered, and `sendmmsg` sends all the answers: two system calls per batch instead
/// of two per query, which is where most of the time went (see bench/README.md). Before
/// a batch of several is answered, `handler::warm` reads ahead the lines its decisions
/// will touch, so their cache misses overlap.
fn udp_loop(socket: std::net::UdpSocket, ctx: Ctx, stop: Arc<std::sync::atomic::AtomicBool>) {
    let fd = socket.as_raw_fd();
    let mut inbufs = vec![[0u8; MAX_BATCHED_REQUEST]; BATCH];
    let mut outbufs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(1232)).collect();
    let mut peers: Vec<Option<SockaddrStorage>> = Vec::with_capacity(BATCH);
    let mut recv_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut send_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut counters = QueryCounters::default();
    let mut tally = AnswerTally::default();
    // Label handles cached: kind × (dropped, slipped).
    let limited_counters: Vec<[prometheus::IntCounter; 2]> = Kind::ALL
        .iter()
        .map(|k| {
            [
                ctx.metrics
                    .rrl_limited
                    .with_label_values(&[k.label(), "dropped"]),
                ctx.metrics
                    .rrl_limited
                    .with_label_values(&[k.label(), "slipped"]),
            ]
        })
        .collect();
    let mut limited = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        peers.clear();
        let mut n_out = 0usize;
        {
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> = inbufs
                .iter_mut()
                .map(|b| [IoSliceMut::new(&mut b[..])])
                .collect();
            let received = match recvmmsg(
                fd,
                &mut recv_headers,
                iovs.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(r) => r,
                Err(Errno::EAGAIN | Errno::EINTR) => continue, // the read timeout: look at `stop`
                Err(e) => {
                    // ICMP errors from earlier sends surface here; keep serving.
                    debug!(error = %e, "udp receive error");
                    continue;
                }
            };
            let batch: SmallVec<[(SockaddrStorage, Parsed<'_>); BATCH]> = received
                .filter_map(|msg| Some((msg.address?, request::parse(msg.iovs().next()?))))
                .collect();
            let mut loaded = None;
            if batch.len() > 1 {
                let (snapshot, _) =
                    loaded.get_or_insert_with(|| (ctx.shared.load(), ctx.health.load()));
                handler::warm(snapshot, batch.iter().filter_map(|(_, p)| p.as_query()));
            }
            let second = ctx.rrl.as_ref().map_or(0, |r| r.now());
            for (addr, parsed) in batch {
                let Some(peer) = to_std(&addr) else { continue };
                let Some(out) = outbufs.get_mut(n_out) else {
                    break;
                };
                // One load of the published snapshot and health view per batch.
                let (snapshot, view) =
                    loaded.get_or_insert_with(|| (ctx.shared.load(), ctx.health.load()));
                let mut gate = ctx.rrl.as_deref().map(|rrl| handler::RrlGate {
                    rrl,
                    now: second,
                    limited: &mut limited,
                });
                let answered = ctx.answer_with(
                    snapshot,
                    view,
                    parsed,
                    peer.ip(),
                    Transport::Udp,
                    &mut counters,
                    &mut tally,
                    gate.as_mut(),
                    out,
                );
                if let Some(decided) = answered {
                    if let Some(rrl) = &ctx.rrl {
                        // A query's answer was limited before it was composed (and cut
                        // already when slipped); anything else is limited as encoded.
                        let (action, kind) = match decided {
                            Some(d) => d,
                            None => {
                                let kind = Kind::of(out);
                                (rrl.action(peer.ip(), kind, out, second, &mut limited), kind)
                            }
                        };
                        let counter = |i: usize| {
                            limited_counters
                                .get(kind.index())
                                .and_then(|c| c.get(i))
                                .map(prometheus::IntCounter::inc)
                        };
                        match action {
                            Action::Send => {}
                            Action::Slip => {
                                counter(1);
                                if decided.is_none() && !response::cut_to_question(out) {
                                    continue;
                                }
                            }
                            Action::Drop => {
                                counter(0);
                                continue;
                            }
                        }
                    }
                    peers.push(Some(addr));
                    n_out += 1;
                }
            }
            if let Some((snapshot, view)) = &loaded {
                tally.apply(snapshot, view);
            }
        }
        counters.flush();
        if n_out == 0 {
            continue;
        }
        let slices: Vec<[IoSlice<'_>; 1]> = outbufs
            .iter()
            .take(n_out)
            .map(|b| [IoSlice::new(b)])
            .collect();
        // sendmmsg stops at the first datagram it cannot send; the rest go one by one so
        // one bad peer cannot cost the others their answers.
        let sent = match sendmmsg(
            fd,
            &mut send_headers,
            slices.iter(),
            &peers,
            [],
            MsgFlags::empty(),
        ) {
            Ok(r) => r.count(),
            Err(e) => {
                debug!(error = %e, "udp batch send error");
                0
            }
        };
        for (out, peer) in outbufs.iter_mut().zip(&peers).take(n_out).skip(sent) {
            if let Some(to) = peer.as_ref().and_then(to_std) {
                send_one(&socket, out, to);
            }
        }
    }
}

/// Sends one answer; one larger than the interface allows (EMSGSIZE: we never fragment)
/// goes out cut to its question with TC set, so the client retries over TCP.
fn send_one(socket: &std::net::UdpSocket, out: &mut Vec<u8>, to: SocketAddr) {
    match socket.send_to(out, to) {
        Err(e)
            if e.raw_os_error() == Some(Errno::EMSGSIZE as i32)
                && response::cut_to_question(out) =>
        {
            if let Err(e) = socket.send_to(out, to) {
                debug!(error = %e, peer = %to, "udp send error (truncated answer)");
            }
        }
        Err(e) => debug!(error = %e, peer = %to, "udp send error"),
        Ok(_) => {}
    }
}

async fn tcp_accept(
    listener: TcpListener,
    ctx: Ctx,
    conns: Arc<Semaphore>,
    (idle, max_queries): (Duration, u32),
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "tcp accept error");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            debug!(%peer, "tcp connection limit reached; closing");
            continue;
        };
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tcp_conn(stream, peer.ip(), ctx, (idle, max_queries), shutdown).await;
            drop(permit);
        });
    }
}

async fn tcp_conn(
    mut stream: TcpStream,
    peer: std::net::IpAddr,
    ctx: Ctx,
    (idle, max_queries): (Duration, u32),
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let mut answered_count = 0u32;
    let mut buf = Vec::with_capacity(512);
    let mut out = Vec::with_capacity(4096);
    let mut counters = QueryCounters::default();
    let mut tally = AnswerTally::default();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let len = match tokio::time::timeout(idle, stream.read_u16()).await {
            Ok(Ok(len)) => usize::from(len),
            _ => return, // idle timeout, EOF or error: close (RFC 7766 6.2.3)
        };
        buf.resize(len, 0);
        match tokio::time::timeout(idle, stream.read_exact(&mut buf)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let parsed = request::parse(&buf);
        if let request::Parsed::Query(q) = &parsed
            && matches!(q.qtype, Rtype::AXFR | Rtype::IXFR)
        {
            // Composing a large zone is CPU work: off the async workers.
            let (snapshot, view, request) =
                (ctx.shared.load_full(), ctx.health.load_full(), buf.clone());
            let Ok(r) = tokio::task::spawn_blocking(move || {
                transfer::respond(&snapshot, &view, &request, peer)
            })
            .await
            else {
                return;
            };
            ctx.metrics
                .transfers
                .with_label_values(&[r.zone.as_str(), r.outcome.label()])
                .inc();
            log_transfer(&r, peer);
            for m in &r.messages {
                if !write_framed(&mut stream, m, idle).await {
                    return;
                }
            }
            continue;
        }
        let snapshot = ctx.shared.load();
        let view = ctx.health.load();
        let answered = ctx
            .answer_with(
                &snapshot,
                &view,
                parsed,
                peer,
                Transport::Tcp,
                &mut counters,
                &mut tally,
                None,
                &mut out,
            )
            .is_some();
        tally.apply(&snapshot, &view);
        // Arc-swap guards are not held across the writes below.
        drop(snapshot);
        drop(view);

        counters.flush();
        if !answered {
            return;
        }
        if !write_framed(&mut stream, &out, idle).await {
            return;
        }
        answered_count += 1;
        if max_queries > 0 && answered_count >= max_queries {
            return; // RFC 7766 6.2.3: the server may close; the client reconnects
        }
    }
}

/// One message with its two-byte length (RFC 1035 4.2.2); false: the connection is done.
/// A client that does not read its answers holds no connection for longer than the
/// idle timeout.
async fn write_framed(stream: &mut TcpStream, message: &[u8], idle: Duration) -> bool {
    let Ok(frame_len) = u16::try_from(message.len()) else {
        return false;
    };
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&frame_len.to_be_bytes());
    framed.extend_from_slice(message);
    matches!(
        tokio::time::timeout(idle, stream.write_all(&framed)).await,
        Ok(Ok(()))
    )
}

fn log_transfer(r: &transfer::Response, peer: std::net::IpAddr) {
    match r.outcome {
        transfer::Outcome::Sent | transfer::Outcome::UpToDate => info!(
            zone = %r.zone,
            %peer,
            records = r.records,
            messages = r.messages.len(),
            result = r.outcome.label(),
            "zone transfer"
        ),
        _ => warn!(zone = %r.zone, %peer, result = r.outcome.label(), "zone transfer refused"),
    }
}

pub fn log_listening(addrs: &[SocketAddr]) {
    for a in addrs {
        info!(listen = %a, "serving DNS over UDP and TCP");
    }
}
