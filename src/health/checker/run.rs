//! The checker task and its handle: the handle sends commands into a mailbox, and the
//! run loop routes each message (a command, a sample, a peer update, a load, a timer)
//! to the core, then publishes and persists as the core says. Nothing is decided here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::cluster::ClusterSide;
use super::core::Core;
use super::core::Intake;
use super::probes::{Probing, SAMPLE_QUEUE, SampleMsg, SampleTx};
use super::report;
use crate::health::plan::HealthPlan;
use crate::health::status::{OverrideError, Status, Target};
use crate::health::store::StateFile;
use crate::health::view::{HealthView, OverrideKind};
use crate::metrics::Metrics;

enum Command {
    Reconfigure(Arc<HealthPlan>),
    Override {
        target: Target,
        kind: Option<OverrideKind>,
        reason: Option<String>,
        fraction: Option<f64>,
        lasts: Option<Duration>,
        reply: oneshot::Sender<Result<(), OverrideError>>,
    },
    Status(oneshot::Sender<Status>),
    /// Writes owed state to disk now (shutdown).
    Flush(oneshot::Sender<()>),
}

/// The handle the rest of the server holds.
#[derive(Clone)]
pub struct HealthHandle {
    pub view: Arc<ArcSwap<HealthView>>,
    tx: mpsc::Sender<Command>,
    ready: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
}

/// Commands waiting for the checker (reloads, overrides, status requests).
const COMMAND_QUEUE: usize = 1024;

impl HealthHandle {
    /// Starts probing everything `plan` names, under a supervisor that restarts the
    /// checker if it ever stops. Must run inside a tokio runtime.
    pub fn start(
        plan: Arc<HealthPlan>,
        state_file: Option<PathBuf>,
        startup_wait: Duration,
        metrics: Arc<Metrics>,
        cluster: Option<ClusterSide>,
    ) -> HealthHandle {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let (ready_tx, ready) = watch::channel(false);
        let (sample_tx, sample_rx) = mpsc::channel(SAMPLE_QUEUE);
        let sample_tx = SampleTx {
            tx: sample_tx,
            overflow: metrics
                .health_queue_overflow
                .with_label_values(&["samples"]),
        };
        // Both series exist from the start, so an alert on them sees a zero.
        metrics
            .health_queue_overflow
            .with_label_values(&["commands"]);
        let view = Arc::new(ArcSwap::from_pointee(HealthView::default()));
        let start = Start {
            plan: Arc::new(ArcSwap::new(plan)),
            view: view.clone(),
            state_file,
            ready_tx: Arc::new(ready_tx),
            sample_tx,
            metrics: metrics.clone(),
            cluster,
            startup_wait,
        };
        // The first core is built here, so the first view is out before serving starts.
        let core = start.core();
        tokio::spawn(supervise(core, start, rx, sample_rx));
        HealthHandle {
            view,
            tx,
            ready,
            metrics,
        }
    }

    /// A new plan (reload): states carry over for endpoints that persist.
    pub fn reconfigure(&self, plan: Arc<HealthPlan>) {
        if let Err(mpsc::error::TrySendError::Full(_)) =
            self.tx.try_send(Command::Reconfigure(plan))
        {
            warn!("health checker is behind: this reload's health plan was not taken");
            self.metrics
                .health_queue_overflow
                .with_label_values(&["commands"])
                .inc();
        }
    }

    /// Sets (`Some`) or clears (`None`) an operator override; persisted. `fraction`
    /// (a drain of a region only): move that share of its clients, not all. `lasts`:
    /// the override ends by itself after that long.
    pub async fn set_override(
        &self,
        target: Target,
        kind: Option<OverrideKind>,
        reason: Option<String>,
        fraction: Option<f64>,
        lasts: Option<Duration>,
    ) -> Result<(), OverrideError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Override {
                target,
                kind,
                reason,
                fraction,
                lasts,
                reply,
            })
            .await
            .map_err(|_| OverrideError::Unavailable)?;
        rx.await.map_err(|_| OverrideError::Unavailable)?
    }

    pub async fn status(&self) -> Option<Status> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Status(reply)).await.ok()?;
        rx.await.ok()
    }

    /// Writes the state file now if a write is owed: a stop right after a transition
    /// must not lose it.
    pub async fn flush(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Flush(reply)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Readiness as it changes (the anycast loop watches it).
    pub fn ready_watch(&self) -> watch::Receiver<bool> {
        self.ready.clone()
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Resolves once the first full probe round is in (or the startup wait ran out).
    pub async fn wait_ready(&self) {
        let mut r = self.ready.clone();
        let _ = r.wait_for(|v| *v).await;
    }
}

impl Core {
    /// Routes messages until the handle's side closes. The mailboxes are borrowed: they
    /// outlive a core that panics, for the next one.
    async fn run(
        mut self,
        rx: &mut mpsc::Receiver<Command>,
        samples: &mut mpsc::Receiver<SampleMsg>,
        deadline: Instant,
    ) {
        let mut watchdog = tokio::time::interval(Duration::from_secs(1));
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut demand_tick = tokio::time::interval(super::demand::SAMPLE_EVERY);
        demand_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut loads = self.loads.take_rx();
        let mut peers_rx = self.cluster.as_mut().and_then(|c| c.take_peers_rx());
        let mut waiting = true;
        self.check_ready(&mut waiting);
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    None => {
                        if self.persist_due.is_some() {
                            self.persist();
                        }
                        return;
                    }
                    Some(Command::Reconfigure(plan)) => {
                        self.reconfigure(plan, None);
                        self.publish(true);
                    }
                    Some(Command::Override { target, kind, reason, fraction, lasts, reply }) => {
                        let r = self.set_override_until(target, kind, reason, fraction, lasts);
                        if r.is_ok() {
                            self.expire_overrides();
                            self.publish(true);
                            self.persist();
                        }
                        let _ = reply.send(r);
                    }
                    Some(Command::Status(reply)) => {
                        let _ = reply.send(report::status(&self));
                    }
                    Some(Command::Flush(reply)) => {
                        if self.persist_due.is_some() {
                            self.persist();
                        }
                        let _ = reply.send(());
                    }
                },
                Some((key, generation, sample)) = samples.recv() => {
                    if let Intake::Publish { persist } = self.intake(&key, generation, sample) {
                        self.publish_after(true, Some(&key));
                        if persist {
                            self.persist_soon();
                        }
                    }
                    self.check_ready(&mut waiting);
                }
                _ = tokio::time::sleep_until(self.publish_due.unwrap_or(deadline)), if self.publish_due.is_some() => {
                    self.publish(true);
                }
                _ = tokio::time::sleep_until(self.persist_due.unwrap_or(deadline)), if self.persist_due.is_some() => {
                    self.persist_owed();
                }
                _ = watchdog.tick() => {
                    self.poll_answers();
                    let revived = self.revive_silent_probes();
                    // Isolation starts when nobody has been heard for a while: nothing
                    // arrives to say so, hence the check here (to the second).
                    let isolation_due = self
                        .cluster
                        .as_ref()
                        .and_then(|c| c.isolation_due())
                        .is_some_and(|d| d.is_zero());
                    if revived || isolation_due {
                        self.publish(true);
                    }
                    if revived {
                        self.persist_soon();
                    }
                }
                _ = demand_tick.tick() => {
                    if self.sample_demand() {
                        self.publish(true);
                    }
                }
                Ok(()) = async { match peers_rx.as_mut() { Some(rx) => rx.changed().await, None => std::future::pending().await } } => {
                    if let (Some(c), Some(rx)) = (self.cluster.as_mut(), peers_rx.as_ref()) {
                        c.set_peers(rx.borrow().clone());
                    }
                    let applied = self.apply_peer_overrides();
                    self.publish(true);
                    if applied {
                        self.persist_soon();
                    }
                    self.check_ready(&mut waiting);
                }
                Some((region, value)) = async { match loads.as_mut() { Some(rx) => rx.recv().await, None => None } } => {
                    if self.observe_load(&region, value) {
                        self.publish(true);
                    }
                }
                _ = tokio::time::sleep_until(self.shifting.next_step().unwrap_or(deadline)), if self.shifting.next_step().is_some() => {
                    self.publish(true);
                }
                _ = tokio::time::sleep_until(self.overrides.next_expiry().unwrap_or(deadline)), if self.overrides.next_expiry().is_some() => {
                    if self.expire_overrides() {
                        self.publish(true);
                        self.persist();
                    }
                }
                _ = tokio::time::sleep_until(deadline), if waiting => {
                    let missing = self.probes.unprobed();
                    if !missing.is_empty() {
                        warn!(?missing, "serving before every endpoint answered its first probe");
                    }
                    if !self.heard_a_peer() {
                        warn!("serving before any cluster peer was heard: deciding from this instance's own probes meanwhile");
                    }
                    let _ = self.ready_tx.send(true);
                    waiting = false;
                }
            }
        }
    }

    /// Ready to serve: every endpoint probed once and, in a cluster, a peer heard (so a
    /// fresh instance whose own probes fail alone does not answer from them), or the
    /// startup wait ran out.
    fn check_ready(&mut self, waiting: &mut bool) {
        if *waiting && self.probes.unprobed().is_empty() && self.heard_a_peer() {
            info!("first probe round complete");
            let _ = self.ready_tx.send(true);
            *waiting = false;
        }
    }
}

/// What every incarnation of the checker starts from.
struct Start {
    plan: Arc<ArcSwap<HealthPlan>>,
    view: Arc<ArcSwap<HealthView>>,
    state_file: Option<PathBuf>,
    ready_tx: Arc<watch::Sender<bool>>,
    sample_tx: SampleTx,
    metrics: Arc<Metrics>,
    cluster: Option<ClusterSide>,
    startup_wait: Duration,
}

impl Start {
    /// A core from the plan in force and the state file (measured states, overrides,
    /// their deadlines), publishing into the view the query path reads.
    fn core(&self) -> Core {
        let persisted = match &self.state_file {
            Some(p) => StateFile::load(p).unwrap_or_else(|e| {
                warn!("ignoring unreadable state file: {e}");
                StateFile::default()
            }),
            None => StateFile::default(),
        };
        let mut core = Core::new(
            self.plan.clone(),
            self.view.clone(),
            &persisted,
            self.state_file.clone(),
            self.ready_tx.clone(),
            self.sample_tx.clone(),
            self.metrics.clone(),
            Probing::Tasks,
        );
        if let Some(side) = &self.cluster {
            core.join(side.clone());
        }
        core
    }
}

/// Runs the checker; if it ever stops (a panic anywhere in the core), logs and counts
/// it, reports not ready, and starts a new one from the state file while the query path
/// keeps the last published view. A checker that cannot run never looks like a healthy
/// one.
async fn supervise(
    mut core: Core,
    start: Start,
    mut rx: mpsc::Receiver<Command>,
    mut samples: mpsc::Receiver<SampleMsg>,
) {
    loop {
        let deadline = Instant::now()
            .checked_add(start.startup_wait)
            .unwrap_or_else(Instant::now);
        let run = CatchUnwind(Box::pin(core.run(&mut rx, &mut samples, deadline)));
        let Err(panic) = run.await else {
            return; // the server is shutting down
        };
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        error!(
            panic = what,
            "health checker stopped: restarting it from the state file; answers keep the last published view meanwhile"
        );
        start.metrics.health_checker_restarts.inc();
        start.ready_tx.send_replace(false);
        core = start.core();
    }
}

/// A future that turns a panic while it is polled into `Err` (what `catch_unwind` is
/// for a closure): the supervisor's mailboxes, borrowed by the future, survive it.
struct CatchUnwind<F>(std::pin::Pin<Box<F>>);

impl<F: std::future::Future<Output = ()>> std::future::Future for CatchUnwind<F> {
    type Output = Result<(), Box<dyn std::any::Any + Send>>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
            Ok(std::task::Poll::Ready(())) => std::task::Poll::Ready(Ok(())),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(panic) => std::task::Poll::Ready(Err(panic)),
        }
    }
}
