//! The probe tasks, one per endpoint, and each endpoint's runtime record: its window,
//! measured state and the task that feeds it. Tasks are spawned for a new endpoint,
//! replaced when its probe changes or it falls silent, and stopped when it goes; an
//! endpoint first seen in this process takes its state from the state file.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::info;

use crate::hash::fnv1a64;
use crate::health::model::{Endpoint, Thresholds};
use crate::health::plan::HealthPlan;
use crate::health::probe;
use crate::health::state::{Sample, Signals, State, Window};
use crate::health::store::{self, EndpointRecord, StateFile};
use crate::health::view::Effective;

/// What a probe task sends: the endpoint's key, the task's generation, the outcome.
pub(super) type SampleMsg = (String, u64, Sample);

/// Samples waiting for the checker. A second's worth for 8,000 endpoints: a checker that
/// far behind drops samples (counted) rather than growing without bound; a dropped
/// sample only delays a decision by one interval.
pub(super) const SAMPLE_QUEUE: usize = 8192;

/// Where probe tasks send samples, and what counts the ones turned away.
#[derive(Clone)]
pub(super) struct SampleTx {
    pub(super) tx: mpsc::Sender<SampleMsg>,
    pub(super) overflow: prometheus::IntCounter,
}

/// Where samples come from: the real probe tasks, or nowhere but the core's `observe`
/// (tests, and `meridian simulate`, which feeds synthetic samples on a virtual clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Probing {
    Tasks,
    Off,
}

/// One endpoint as the checker runs it.
pub(super) struct EndpointRt {
    pub(super) region: String,
    pub(super) ep: Endpoint,
    pub(super) thresholds: Thresholds,
    pub(super) window: Window,
    /// What the window says, kept from the last sample: every publication reads each
    /// endpoint's signals, and computing them sorts the window.
    pub(super) signals: Signals,
    pub(super) state: State,
    pub(super) since: Instant,
    pub(super) since_unix: u64,
    /// Whether a probe has answered since this process started.
    pub(super) probed: bool,
    /// When the probe task last reported; a task that stops reporting (it panicked or
    /// hangs) is replaced and its silence counted as a failure.
    pub(super) last_report: Instant,
    /// Bumped with each new task: samples of a replaced task are dropped.
    pub(super) generation: u64,
    /// When the current run of failing (or passing) samples began: where a failover
    /// event's detection starts.
    pub(super) streak: Option<(bool, Instant)>,
    task: Option<JoinHandle<()>>,
}

impl EndpointRt {
    /// How long a down endpoint must still wait before it may recover (zero otherwise).
    pub(super) fn cooldown_left(&self, now: Instant) -> Duration {
        match self.state {
            State::Down { since, .. } => self
                .thresholds
                .cooldown
                .saturating_sub(now.saturating_duration_since(since)),
            _ => Duration::ZERO,
        }
    }

    pub(super) fn measured(&self) -> Effective {
        self.state.effective()
    }

    fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Drop for EndpointRt {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Every endpoint's record, keyed `region/endpoint`, and the tasks probing them.
pub(super) struct Probes {
    endpoints: BTreeMap<String, EndpointRt>,
    generation: u64,
    sample_tx: SampleTx,
    probing: Probing,
}

impl Probes {
    pub(super) fn new(sample_tx: SampleTx, probing: Probing) -> Probes {
        Probes {
            endpoints: BTreeMap::new(),
            generation: 0,
            sample_tx,
            probing,
        }
    }

    pub(super) fn get(&self, key: &str) -> Option<&EndpointRt> {
        self.endpoints.get(key)
    }

    pub(super) fn get_mut(&mut self, key: &str) -> Option<&mut EndpointRt> {
        self.endpoints.get_mut(key)
    }

    pub(super) fn contains(&self, key: &str) -> bool {
        self.endpoints.contains_key(key)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&String, &EndpointRt)> {
        self.endpoints.iter()
    }

    /// The endpoints of `region`, with their current generations.
    pub(super) fn of_region(&self, region: &str) -> Vec<(String, u64)> {
        self.endpoints
            .iter()
            .filter(|(_, e)| e.region == region)
            .map(|(k, e)| (k.clone(), e.generation))
            .collect()
    }

    /// Endpoints no probe has answered for yet.
    pub(super) fn unprobed(&self) -> Vec<&String> {
        self.endpoints
            .iter()
            .filter(|(_, e)| !e.probed)
            .map(|(k, _)| k)
            .collect()
    }

    fn spawn(&mut self, key: &str, ep: &Endpoint) -> (u64, Option<JoinHandle<()>>) {
        self.generation += 1;
        let task = match self.probing {
            Probing::Tasks => Some(spawn_probe(
                key.to_string(),
                ep.clone(),
                self.generation,
                self.sample_tx.clone(),
            )),
            Probing::Off => None,
        };
        (self.generation, task)
    }

    /// Replaces endpoint `key`'s task (it fell silent); returns the new generation.
    pub(super) fn restart(&mut self, key: &str) -> Option<u64> {
        let ep = self.endpoints.get(key)?.ep.clone();
        let (generation, task) = self.spawn(key, &ep);
        let rt = self.endpoints.get_mut(key)?;
        rt.stop();
        rt.task = task;
        rt.generation = generation;
        Some(generation)
    }

    /// Takes on a new plan: an unchanged probe keeps its task, window and state; a
    /// changed one keeps the state and restarts probing; a new one starts from the
    /// state file (`persisted`, at startup) or up; those gone are stopped.
    pub(super) fn reconfigure(
        &mut self,
        plan: &HealthPlan,
        persisted: Option<&StateFile>,
        now: Instant,
    ) {
        let mut next: BTreeMap<String, EndpointRt> = BTreeMap::new();
        for region in &plan.regions {
            for ep in &region.endpoints {
                let key = format!("{}/{}", region.name, ep.name);
                match self.endpoints.remove(&key) {
                    Some(mut rt) if rt.ep == *ep => {
                        rt.thresholds = region.thresholds.clone();
                        rt.signals = rt.window.signals(rt.thresholds.latency_percentile);
                        next.insert(key, rt);
                    }
                    Some(mut rt) => {
                        rt.stop();
                        let (generation, task) = self.spawn(&key, ep);
                        rt.task = task;
                        rt.generation = generation;
                        rt.ep = ep.clone();
                        rt.thresholds = region.thresholds.clone();
                        rt.signals = rt.window.signals(rt.thresholds.latency_percentile);
                        next.insert(key, rt);
                    }
                    None => {
                        let (state, since, since_unix) = persisted
                            .and_then(|p| p.endpoints.get(&key))
                            .map(|r| restore(r, now))
                            .unwrap_or((State::Up, now, store::now_unix()));
                        if state.is_down() {
                            info!(key, "restored as down from the state file");
                        }
                        let (generation, task) = self.spawn(&key, ep);
                        next.insert(
                            key,
                            EndpointRt {
                                region: region.name.clone(),
                                ep: ep.clone(),
                                thresholds: region.thresholds.clone(),
                                window: Window::default(),
                                signals: Window::default()
                                    .signals(region.thresholds.latency_percentile),
                                state,
                                since,
                                since_unix,
                                probed: false,
                                last_report: now,
                                generation,
                                streak: None,
                                task,
                            },
                        );
                    }
                }
            }
        }
        // Dropping what is left stops probes of endpoints that are gone.
        self.endpoints = next;
    }
}

/// First probes spread over the interval, deterministically per endpoint.
fn jitter(key: &str, interval: Duration) -> Duration {
    let ms = interval.as_millis().max(1) as u64;
    Duration::from_millis(fnv1a64(key.bytes()) % ms)
}

fn spawn_probe(key: String, ep: Endpoint, generation: u64, tx: SampleTx) -> JoinHandle<()> {
    tokio::spawn(async move {
        let client = probe::client(&ep);
        tokio::time::sleep(jitter(&key, ep.interval).min(ep.interval / 4)).await;
        let mut next = Instant::now();
        let mut last_ok = true;
        loop {
            let sample = probe::run_with(&ep, client.as_ref(), last_ok).await;
            last_ok = sample.ok;
            match tx.tx.try_send((key.clone(), generation, sample)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => tx.overflow.inc(),
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
            next += ep.interval;
            let now = Instant::now();
            if next < now {
                next = now;
            }
            tokio::time::sleep_until(next).await;
        }
    })
}

/// A state file's record as a state on tokio's clock: a down endpoint keeps its age, so
/// its cooldown continues across the restart.
fn restore(rec: &EndpointRecord, now: Instant) -> (State, Instant, u64) {
    let age = Duration::from_secs(store::now_unix().saturating_sub(rec.since));
    let since = now.checked_sub(age).unwrap_or(now);
    let state = match rec.state.as_str() {
        "down" => State::Down {
            since,
            held_logged: false,
        },
        "degraded" => State::Degraded,
        _ => State::Up,
    };
    (state, since, rec.since)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checker too far behind: a probe task facing a full sample queue goes on
    /// probing on schedule, drops what does not fit, and counts it; it does not wait.
    #[tokio::test]
    async fn a_full_sample_queue_drops_and_counts_without_stopping_the_probe() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let a = accepted.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(s);
            }
        });
        // Room for two samples, and nobody reading them.
        let (tx, mut rx) = mpsc::channel(2);
        let overflow = prometheus::IntCounter::new("overflow", "test").unwrap();
        let ep = Endpoint {
            name: "web".into(),
            address: addr,
            probe: crate::health::Probe::Tcp,
            interval: Duration::from_millis(20),
            timeout: Duration::from_millis(200),
            serves: 0,
        };
        let task = spawn_probe(
            "eu/web".into(),
            ep,
            1,
            SampleTx {
                tx,
                overflow: overflow.clone(),
            },
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while overflow.get() < 5 {
            assert!(
                Instant::now() < deadline,
                "nothing counted: {}",
                overflow.get()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // It kept probing: more connections than the queue holds samples.
        assert!(accepted.load(std::sync::atomic::Ordering::SeqCst) >= 7);
        // The queue holds the first two; room again, and the next sample fits.
        assert!(rx.recv().await.unwrap().2.ok);
        assert!(rx.recv().await.unwrap().2.ok);
        let next = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert!(next.is_ok_and(|s| s.is_some()), "probing stopped");
        task.abort();
    }
}
