//! One query in, one response out: parse → checks every authoritative server makes →
//! `zone::lookup::resolve` (with traffic policies answering their names) → encode.
//! Transport-independent and synchronous; it reads the current snapshot once and never
//! waits on anything.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use super::request::{self, Parsed, Query};
use super::response::{self, OptOut};
use super::rrl::{Action, Kind, Rrl};
use smallvec::SmallVec;

use crate::dnssec;
use crate::iana::Rtype;
pub use crate::iana::Transport;
use crate::iana::{Class, OptRcode, Rcode};
use crate::policy::decide::{self, HealthView, Outcome};
use crate::policy::{AddressOrder, AllDown, PolicySet};
use crate::snapshot::Snapshot;
use crate::zone::lookup::{self, Dynamic, DynamicAnswers};

/// Classic DNS over UDP without EDNS (RFC 1035 4.2.1).
const CLASSIC_UDP_LIMIT: usize = 512;

/// What was answered, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handled<'s> {
    pub zone: Option<&'s str>,
    pub qtype: Rtype,
    pub rcode: OptRcode,
    /// What response rate limiting decided before the response was composed, and the
    /// kind of response it counted (`None`: not decided here; the caller limits the
    /// encoded response, if at all).
    pub rrl: Option<(Action, Kind)>,
}

/// Response rate limiting decided on the answer before it is composed, so a dropped or
/// slipped answer costs no signature (a random-subdomain flood with DO would otherwise
/// sign one denial proof per query, only for RRL to drop it).
pub struct RrlGate<'r> {
    pub rrl: &'r Rrl,
    /// Seconds, as `Rrl::now` gives them (read once per batch).
    pub now: u32,
    /// This thread's limited responses, for the slip.
    pub limited: &'r mut u64,
}

/// The RRL kind and name key of an answer (as `rrl::name_key` reads them from an
/// encoded response): answers and no-data by qname and qtype, NXDOMAIN and referrals by
/// zone.
fn rrl_key(ans: &lookup::Answer<'_>, qname: &[u8], qtype: Rtype) -> (Kind, u64) {
    let kind = match ans.rcode {
        Rcode::NOERROR if !ans.answer.is_empty() => Kind::Answer,
        Rcode::NOERROR if ans.aa => Kind::Nodata,
        Rcode::NOERROR => Kind::Referral,
        Rcode::NXDOMAIN => Kind::Nxdomain,
        _ => Kind::Error,
    };
    let fold = |bytes: &[u8]| crate::hash::fnv1a64(bytes.iter().map(u8::to_ascii_lowercase));
    let name = match kind {
        Kind::Answer | Kind::Nodata => fold(qname) ^ crate::hash::mix64(u64::from(qtype.to_int())),
        Kind::Nxdomain | Kind::Referral => fold(ans.zone.unwrap_or("").as_bytes()) ^ 1,
        Kind::Error => 0,
    };
    (kind, name)
}

/// Policy answers counted while handling a batch, applied to the policies' counters
/// once the batch is answered (`apply`, with the snapshot the batch used).
///
/// With thousands of policies a query's counter array is cold in the cache. Incremented
/// in place it stalled its query on a miss; applied together, a batch's misses overlap.
/// A busy name fills whole batches: a run of the same counter is added at once, so the
/// serving threads meet on a shared counter once per batch, not once per answer.
#[derive(Debug, Default)]
pub struct AnswerTally {
    answered: Vec<(u32, u16)>,
    /// (policy, slot of the region the client ranks first): where demand comes from.
    first: Vec<(u32, u16)>,
    all_down: Vec<u32>,
    /// Answers with pre-signed RRSIGs: added to the shared counter once per batch, not
    /// a contended cache line per answer.
    presigned: u64,
}

/// Calls `add` once per run of equal items with the run's length.
fn runs<T: PartialEq + Copy>(items: &mut Vec<T>, mut add: impl FnMut(T, u64)) {
    let mut it = items.drain(..);
    let Some(mut cur) = it.next() else {
        return;
    };
    let mut n = 1u64;
    for x in it {
        if x == cur {
            n += 1;
        } else {
            add(cur, n);
            (cur, n) = (x, 1);
        }
    }
    add(cur, n);
}

impl AnswerTally {
    /// Applies the batch's counts to `snapshot`'s counters, and stamps `view` with its
    /// first policy answer.
    pub fn apply(&mut self, snapshot: &Snapshot, view: &HealthView) {
        if !self.answered.is_empty() || !self.all_down.is_empty() {
            view.answered.mark();
        }
        let counters = &snapshot.counters;
        runs(&mut self.answered, |(p, slot), n| {
            if let Some(c) = counters.get(p as usize) {
                c.answered(usize::from(slot), n);
            }
        });
        runs(&mut self.first, |(p, slot), n| {
            if let Some(c) = counters.get(p as usize) {
                c.ranked_first(usize::from(slot), n);
            }
        });
        runs(&mut self.all_down, |p, n| {
            if let Some(c) = counters.get(p as usize) {
                c.all_down(n);
            }
        });
        if self.presigned > 0 {
            dnssec::PRESIGNED_SERVED.fetch_add(self.presigned, Ordering::Relaxed);
            self.presigned = 0;
        }
    }
}

/// Readies the caches for answering `queries`, a batch just received and parsed: for
/// each query with an ECS client whose name is bound to a policy exactly, the lines its
/// decision will read (`PolicySet::warm`). Costs a name lookup per distinct name; queries
/// without ECS (static names, or resolvers whose few addresses stay cached) are skipped.
pub fn warm<'q>(snapshot: &Snapshot, queries: impl Iterator<Item = &'q Query<'q>>) {
    let mut batch: SmallVec<[(u32, IpAddr); 32]> = SmallVec::new();
    let mut last: (SmallVec<[u8; 64]>, Option<u32>) = (SmallVec::new(), None);
    for q in queries {
        let Some(client) = q.ecs.and_then(|e| e.client()) else {
            continue;
        };
        let mut lower: SmallVec<[u8; 64]> = SmallVec::from_slice(q.qname);
        lower.make_ascii_lowercase();
        // A busy name fills whole batches: look it up once.
        if lower != last.0 {
            let policy = snapshot.zones.policy_at(&lower);
            last = (lower, policy);
        }
        if let Some(policy) = last.1 {
            batch.push((policy, client));
        }
    }
    snapshot.policies.warm(&batch);
}

/// Handles one packet from `peer`; `None` means send nothing (it was not a query).
/// Policy answers are counted into `tally` when given.
pub fn handle<'s>(
    snapshot: &'s Snapshot,
    health: &HealthView,
    packet: &'s [u8],
    peer: IpAddr,
    transport: Transport,
    tally: Option<&mut AnswerTally>,
    out: &mut Vec<u8>,
) -> Option<Handled<'s>> {
    handle_parsed(
        snapshot,
        health,
        request::parse(packet),
        peer,
        transport,
        tally,
        out,
    )
}

/// `handle` for a packet already parsed (the UDP loop parses a batch once, to read it
/// ahead with `warm` and then answer it).
pub fn handle_parsed<'s>(
    snapshot: &'s Snapshot,
    health: &HealthView,
    parsed: Parsed<'s>,
    peer: IpAddr,
    transport: Transport,
    tally: Option<&mut AnswerTally>,
    out: &mut Vec<u8>,
) -> Option<Handled<'s>> {
    handle_gated(snapshot, health, parsed, peer, transport, tally, None, out)
}

/// `handle_parsed` with response rate limiting decided on a query's answer before it is
/// composed (UDP). A dropped answer leaves `out` empty (`Handled::rrl` says so); a
/// slipped one is its header and question with TC.
#[allow(clippy::too_many_arguments)]
pub fn handle_gated<'s>(
    snapshot: &'s Snapshot,
    health: &HealthView,
    parsed: Parsed<'s>,
    peer: IpAddr,
    transport: Transport,
    tally: Option<&mut AnswerTally>,
    gate: Option<&mut RrlGate<'_>>,
    out: &mut Vec<u8>,
) -> Option<Handled<'s>> {
    let q = match parsed {
        Parsed::Drop => return None,
        Parsed::HeaderOnly { id, flags, rcode } => {
            response::header_only(out, id, flags, rcode);
            return Some(Handled {
                zone: None,
                qtype: Rtype::from_int(0),
                rcode: OptRcode::from_rcode(rcode),
                rrl: None,
            });
        }
        Parsed::Query(q) => q,
    };
    let qtype = q.qtype;
    let handled = move |rcode: OptRcode, zone: Option<&'s str>| {
        Some(Handled {
            zone,
            qtype,
            rcode,
            rrl: None,
        })
    };
    let our_size = snapshot.edns_udp_size;
    let mut opt_out = q.edns.map(|e| OptOut {
        udp_size: our_size,
        ecs: q.ecs.map(|e| (e, 0)),
        dnssec_ok: e.dnssec_ok,
        // Looked for only when configured: most queries carry no option but ECS.
        nsid: snapshot
            .nsid
            .as_deref()
            .filter(|_| super::request::has_option(e.options, super::request::OPTION_NSID)),
    });
    // Signatures only to clients that ask (RFC 4035 3.2.1), and only from signed zones.
    let dnssec = q.edns.is_some_and(|e| e.dnssec_ok) && snapshot.dnssec.is_signed();
    if let Some(e) = q.edns
        && e.version > 0
    {
        // RFC 6891 6.1.3: we speak version 0 only.
        response::error(out, &q, OptRcode::BADVERS, opt_out);
        return handled(OptRcode::BADVERS, None);
    }
    let limit = match (transport, q.edns) {
        (Transport::Tcp, _) => usize::from(u16::MAX),
        (Transport::Udp, None) => CLASSIC_UDP_LIMIT,
        (Transport::Udp, Some(e)) => usize::from(e.udp_size.clamp(512, our_size.max(512))),
    };
    let refused = OptRcode::from_rcode(Rcode::REFUSED);
    if Class::from_int(q.qclass) != Class::IN {
        response::error(out, &q, refused, opt_out);
        return handled(refused, None);
    }
    match q.qtype {
        // Zone transfers are not offered; the RFC 1035 mail meta-queries are obsolete.
        Rtype::AXFR | Rtype::IXFR => {
            response::error(out, &q, refused, opt_out);
            handled(refused, None)
        }
        Rtype::MAILA | Rtype::MAILB => {
            let notimp = OptRcode::from_rcode(Rcode::NOTIMP);
            response::error(out, &q, notimp, opt_out);
            handled(notimp, None)
        }
        _ => {
            // RFC 7871: the ECS address when given (source 0: no client information),
            // else the address the query came from.
            let client = match q.ecs {
                Some(e) => e.client(),
                None => Some(peer),
            };
            let mut policies = PolicyAnswers {
                snapshot,
                health,
                client,
                scope: 0,
                tally,
                dnssec,
            };
            let mut ans =
                lookup::resolve_with(&snapshot.zones, q.qname, q.qtype, &mut policies, dnssec);
            let decided = gate.map(|g| {
                let (kind, name) = rrl_key(&ans, q.qname, q.qtype);
                (g.rrl.action_named(peer, kind, name, g.now, g.limited), kind)
            });
            let action = decided.map(|(a, _)| a);
            let rcode = OptRcode::from_rcode(ans.rcode);
            if action == Some(Action::Drop) {
                out.clear();
                return Some(Handled {
                    zone: ans.zone,
                    qtype,
                    rcode,
                    rrl: decided,
                });
            }
            let mut cut = action == Some(Action::Slip);
            if cut {
                ans.denial.clear(); // nothing to sign for a response cut to its question
            } else if !ans.denial.is_empty() {
                let budgeted = transport == Transport::Udp;
                cut = !add_proofs(
                    snapshot,
                    &mut ans,
                    q.edns.is_some_and(|e| e.compact_ok),
                    budgeted,
                );
            }
            if let Some(o) = opt_out.as_mut() {
                o.ecs = q.ecs.map(|e| (e, policies.scope));
            }
            response::encode(out, &q, &ans, limit, opt_out);
            if cut && !response::cut_to_question(out) {
                out.clear();
                return Some(Handled {
                    zone: ans.zone,
                    qtype,
                    rcode,
                    rrl: decided.map(|(_, kind)| (Action::Drop, kind)),
                });
            }
            Some(Handled {
                zone: ans.zone,
                qtype,
                rcode,
                rrl: decided,
            })
        }
    }
}

/// The signed NSEC proofs the answer calls for, in its authority section. A name that
/// does not exist is answered NOERROR with its NXNAME proof unless the client set CO
/// (RFC 9824 4): resolvers that predate it then cache a NODATA, which is safe.
/// Returns false when a proof needed a new signature past the online signing rate
/// (`budgeted`: UDP): the caller then answers truncated, for a retry over TCP.
fn add_proofs<'s>(
    snapshot: &Snapshot,
    ans: &mut lookup::Answer<'s>,
    compact_ok: bool,
    budgeted: bool,
) -> bool {
    use std::borrow::Cow;
    for d in std::mem::take(&mut ans.denial) {
        if matches!(d, lookup::Denial::NxDomain { .. }) && !compact_ok {
            ans.rcode = Rcode::NOERROR;
        }
        let p = match dnssec::denial::compose(&snapshot.dnssec, &d, budgeted) {
            dnssec::denial::Composed::Proof(p) => p,
            dnssec::denial::Composed::None => continue,
            dnssec::denial::Composed::OverBudget => return false,
        };
        ans.authority.push(lookup::Rr {
            owner: p.owner.clone(),
            rtype: Rtype::NSEC,
            ttl: p.ttl,
            rdata: Cow::Owned(p.rdata),
        });
        ans.authority.extend(p.sigs.iter().map(|s| lookup::Rr {
            owner: p.owner.clone(),
            rtype: Rtype::RRSIG,
            ttl: p.ttl,
            rdata: Cow::Owned(s.to_vec()),
        }));
    }
    true
}

/// Answers policy names for one query and remembers the widest ECS scope used (0 when
/// nothing in the answer depended on the client).
pub struct PolicyAnswers<'s, 't> {
    pub snapshot: &'s Snapshot,
    pub health: &'t HealthView,
    pub client: Option<IpAddr>,
    pub scope: u8,
    /// Where answers per policy and region are counted, if they are.
    pub tally: Option<&'t mut AnswerTally>,
    /// The query set DO and the snapshot signs: answers carry their RRSIGs.
    pub dnssec: bool,
}

static LAST_ALL_DOWN_LOG: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Numbers this thread's dynamic answers for `order: rotate | shuffle`: a counter
    /// per serving thread, so no answer touches a shared cache line. Started from the
    /// thread's own address so that threads (and shuffles) do not move in step.
    static TURN: std::cell::Cell<u64> = std::cell::Cell::new({
        let here = 0u8;
        (&here as *const u8 as u64).rotate_left(17)
    });
}

fn next_turn() -> u64 {
    TURN.with(|t| {
        let n = t.get().wrapping_add(1);
        t.set(n);
        n
    })
}

/// Unix seconds, read only for a tenant with a planned move.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// At most one all-down log line every 10 s: an outage must not become a log flood.
fn log_all_down(policy: &str, behaviour: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let last = LAST_ALL_DOWN_LOG.load(Ordering::Relaxed);
    if now >= last + 10
        && LAST_ALL_DOWN_LOG
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            policy,
            behaviour,
            "no healthy region: applying the all-down behaviour"
        );
    }
}

impl<'s> DynamicAnswers<'s> for PolicyAnswers<'s, '_> {
    fn answer(&mut self, policy: u32, qtype: Rtype, name: &[u8]) -> Dynamic<'s> {
        let mut d = self.decide(policy, qtype, name);
        if self.dnssec {
            self.attach_sigs(policy, &mut d);
        }
        d
    }
}

impl<'s> PolicyAnswers<'s, '_> {
    /// The pre-signed RRSIGs of a dynamic answer. One the tables lack (past their
    /// size limit, or a race with a view published without `prepare`) is signed here
    /// and cached, and counted: `meridian_dnssec_inline_signatures_total` stays 0
    /// when the design holds.
    fn attach_sigs(&mut self, policy: u32, d: &mut Dynamic<'s>) {
        let dnssec = &self.snapshot.dnssec;
        let Some(Some(zk)) = dnssec.policy_keys.get(policy as usize) else {
            return;
        };
        let Some(p) = self.snapshot.policies.policies.get(policy as usize) else {
            return;
        };
        let (rtype, rdata, sigs): (Rtype, &[&[u8]], &mut Option<lookup::SigCopies>) = match d {
            Dynamic::Records {
                rtype, rdata, sigs, ..
            } => (*rtype, &rdata[..], sigs),
            Dynamic::Cname { target, sigs, .. } => {
                let (found, pre) = lookup_or_sign(dnssec, zk, p, policy, Rtype::CNAME, &[*target]);
                *sigs = Some(found);
                self.count_presigned(pre);
                return;
            }
            Dynamic::NoData | Dynamic::ServFail | Dynamic::NxDomain => return,
        };
        let (found, pre) = lookup_or_sign(dnssec, zk, p, policy, rtype, rdata);
        *sigs = Some(found);
        self.count_presigned(pre);
    }

    fn count_presigned(&mut self, presigned: bool) {
        if !presigned {
            return;
        }
        match self.tally.as_deref_mut() {
            Some(t) => t.presigned += 1,
            None => {
                dnssec::PRESIGNED_SERVED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn decide(&mut self, policy: u32, qtype: Rtype, name: &[u8]) -> Dynamic<'s> {
        let set: &'s PolicySet = &self.snapshot.policies;
        // The route is all a decision reads; the policy itself only for all-down.
        let Some(route) = set.routes.get(policy as usize) else {
            return Dynamic::ServFail;
        };
        let d = match set.homes.get(policy as usize).and_then(Option::as_ref) {
            None => decide::decide_route(set, self.health, route, qtype, self.client),
            Some(home) => {
                let label = decide::tenant_label(name, home.depth);
                let (d, _) = decide::decide_home(
                    set,
                    self.health,
                    route,
                    home,
                    label,
                    qtype,
                    self.client,
                    &unix_now,
                );
                d
            }
        };
        self.scope = self.scope.max(d.scope);
        if let Some(t) = self.tally.as_deref_mut() {
            for &slot in d.slots.get(..d.n).unwrap_or_default() {
                t.answered.push((policy, slot));
            }
            if d.first != decide::NO_SLOT {
                t.first.push((policy, d.first));
            }
            if d.outcome == Outcome::AllDown {
                t.all_down.push(policy);
            }
        }
        // Health-aware TTL: never above the policy's, shorter while a chosen region is
        // close to a state change, so resolvers come back when it may have changed.
        let ttl = d
            .chosen()
            .iter()
            .filter_map(|&r| set.regions.get(usize::from(r)))
            .filter_map(|r| self.health.ttl_cap(r.id))
            .fold(route.ttl(), u32::min);
        // The per-thread counter only for regions that reorder (most answer `fixed`).
        let reorders = d
            .chosen()
            .iter()
            .filter_map(|&r| set.regions.get(usize::from(r)))
            .any(|r| r.order != AddressOrder::Fixed);
        let turn = if reorders { next_turn() } else { 0 };
        // `all`: fail-open answers every address, as if every server were up.
        let regions = |cname: bool, all: bool| -> Dynamic<'s> {
            let chosen = d.chosen();
            if cname {
                return match chosen
                    .first()
                    .and_then(|&r| set.regions.get(usize::from(r)))
                    .and_then(|r| r.cname.as_deref())
                {
                    Some(target) => Dynamic::Cname {
                        ttl,
                        target,
                        sigs: None,
                    },
                    None => Dynamic::NoData,
                };
            }
            let mut rdata = SmallVec::new();
            for &r in chosen {
                if let Some(region) = set.regions.get(usize::from(r)) {
                    let live = if all {
                        u64::MAX
                    } else {
                        self.health.live(region.id)
                    };
                    region
                        .rdata
                        .push_to(qtype, live, region.order, turn, &mut rdata);
                }
            }
            if rdata.is_empty() {
                Dynamic::NoData
            } else {
                Dynamic::Records {
                    rtype: qtype,
                    ttl,
                    rdata,
                    sigs: None,
                }
            }
        };
        match d.outcome {
            Outcome::Addresses => regions(false, false),
            Outcome::Cname => regions(true, false),
            Outcome::NoData => Dynamic::NoData,
            Outcome::NxDomain => Dynamic::NxDomain,
            Outcome::AllDown => {
                let Some(p) = set.policies.get(policy as usize) else {
                    return Dynamic::ServFail;
                };
                log_all_down(&p.display, p.all_down.name());
                match &p.all_down {
                    AllDown::FailOpen => regions(d.fail_open_cname, true),
                    AllDown::NoData => Dynamic::NoData,
                    AllDown::ServFail => Dynamic::ServFail,
                    AllDown::Static { rdata: fixed, .. } => {
                        let mut rdata = SmallVec::new();
                        fixed.push_to(qtype, u64::MAX, AddressOrder::Fixed, 0, &mut rdata);
                        if rdata.is_empty() {
                            Dynamic::NoData
                        } else {
                            Dynamic::Records {
                                rtype: qtype,
                                ttl: p.ttl,
                                rdata,
                                sigs: None,
                            }
                        }
                    }
                }
            }
        }
    }
}

fn lookup_or_sign(
    dnssec: &dnssec::Dnssec,
    zk: &dnssec::ZoneKeys,
    p: &crate::policy::Policy,
    policy: u32,
    rtype: Rtype,
    rdata: &[&[u8]],
) -> (lookup::SigCopies, bool) {
    if let Some(s) = dnssec.dynamic.copy(policy, rtype, rdata) {
        return (s, true);
    }
    let mut key = vec![1];
    key.extend_from_slice(&policy.to_be_bytes());
    key.extend_from_slice(&rtype.to_int().to_be_bytes());
    key.extend_from_slice(&dnssec::dynamic::content_hash(rdata).to_be_bytes());
    // Not budgeted: the tables should have had it (counted), and a policy answer
    // without its RRSIG would not validate.
    let sigs = dnssec.denials.get_or_sign(key, false, || {
        dnssec::INLINE_SIGNED.fetch_add(1, Ordering::Relaxed);
        zk.sign(dnssec::now(), &p.name, rtype, p.ttl, rdata)
    });
    (
        sigs.map(|s| s.iter().map(|s| s.to_vec()).collect())
            .unwrap_or_default(),
        false,
    )
}
