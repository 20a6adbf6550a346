//! Handing a view to the query path. A view that must be prepared first (DNSSEC signs
//! the answers it makes possible, so that none is served unsigned) is prepared on a
//! thread of its own: signing a policy's new answer sets can take milliseconds per
//! policy, and the checker must not wait on it to take the next sample. The checker
//! hands over its newest view and goes on; the preparer takes the newest it was handed
//! (a view overtaken before it was prepared is never served, so it is skipped),
//! prepares it, then stores it. Views go through that one thread, in order, from the
//! first that needed preparing on; until then they are stored at once.

use std::sync::{Arc, Condvar, Mutex, PoisonError};

use arc_swap::ArcSwap;
use tracing::error;

use crate::health::plan::Prepare;
use crate::health::view::HealthView;

pub(super) struct Release {
    /// What the query path reads.
    served: Arc<ArcSwap<HealthView>>,
    /// The newest view handed over (served, or being prepared): what the checker reads.
    latest: Arc<HealthView>,
    preparer: Option<Arc<Preparer>>,
}

struct Preparer {
    slot: Mutex<Slot>,
    wake: Condvar,
}

#[derive(Default)]
struct Slot {
    next: Option<(Arc<HealthView>, Option<Prepare>)>,
    closed: bool,
}

impl Release {
    pub(super) fn new(served: Arc<ArcSwap<HealthView>>) -> Release {
        Release {
            latest: served.load_full(),
            served,
            preparer: None,
        }
    }

    pub(super) fn latest(&self) -> &Arc<HealthView> {
        &self.latest
    }

    #[cfg(test)]
    pub(super) fn served(&self) -> &Arc<ArcSwap<HealthView>> {
        &self.served
    }

    /// Publishes `view`, after `prepare` has run with it when given.
    pub(super) fn hand_over(&mut self, view: HealthView, prepare: Option<&Prepare>) {
        let view = Arc::new(view);
        self.latest = view.clone();
        if prepare.is_none() && self.preparer.is_none() {
            self.served.store(view);
            return;
        }
        let preparer = match &self.preparer {
            Some(p) => p.clone(),
            None => match self.start() {
                Some(p) => p,
                None => {
                    // No thread to prepare on: prepare here rather than serve unsigned.
                    if let Some(p) = prepare {
                        (p.0)(&view);
                    }
                    self.served.store(view);
                    return;
                }
            },
        };
        let mut slot = preparer.slot.lock().unwrap_or_else(PoisonError::into_inner);
        slot.next = Some((view, prepare.cloned()));
        preparer.wake.notify_one();
    }

    fn start(&mut self) -> Option<Arc<Preparer>> {
        let preparer = Arc::new(Preparer {
            slot: Mutex::new(Slot::default()),
            wake: Condvar::new(),
        });
        let (p, served) = (preparer.clone(), self.served.clone());
        match std::thread::Builder::new()
            .name("meridian-prepare".into())
            .spawn(move || p.run(&served))
        {
            Ok(_) => {
                self.preparer = Some(preparer.clone());
                Some(preparer)
            }
            Err(e) => {
                error!(
                    "cannot start the thread that signs new answers: {e}; signing on the checker"
                );
                None
            }
        }
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if let Some(p) = &self.preparer {
            p.slot.lock().unwrap_or_else(PoisonError::into_inner).closed = true;
            p.wake.notify_one();
        }
    }
}

impl Preparer {
    fn run(&self, served: &ArcSwap<HealthView>) {
        loop {
            let next = {
                let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
                loop {
                    if let Some(next) = slot.next.take() {
                        break next;
                    }
                    if slot.closed {
                        return;
                    }
                    slot = self.wake.wait(slot).unwrap_or_else(PoisonError::into_inner);
                }
            };
            let (view, prepare) = next;
            if let Some(p) = prepare {
                let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (p.0)(&view)));
                if done.is_err() {
                    // Still publish: an answer not signed ahead is signed when asked
                    // (meridian_dnssec_inline_signatures_total counts them).
                    error!(
                        "signing the answers of a new health view failed; publishing it, its answers are signed on demand"
                    );
                }
            }
            // Stored under the slot's lock, after a last look at `closed`: once the
            // checker that handed this view over is gone (a restart), a newer core
            // publishes, and this older view must not land after its views.
            let slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
            if slot.closed {
                return;
            }
            served.store(view);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::health::view::Effective;

    fn view(state: Effective) -> HealthView {
        let mut v = HealthView::default();
        v.set(0, state);
        v
    }

    fn wait_for(served: &ArcSwap<HealthView>, state: Effective) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while served.load().state(0) != state {
            assert!(Instant::now() < deadline, "never published");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn without_a_hook_a_view_is_served_at_once() {
        let served = Arc::new(ArcSwap::from_pointee(view(Effective::Up)));
        let mut r = Release::new(served.clone());
        r.hand_over(view(Effective::Down), None);
        assert_eq!(served.load().state(0), Effective::Down);
        assert!(r.preparer.is_none(), "no thread without a hook");
    }

    #[test]
    fn a_slow_hook_holds_up_neither_the_checker_nor_later_views() {
        let served = Arc::new(ArcSwap::from_pointee(view(Effective::Up)));
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let calls = Arc::new(AtomicUsize::new(0));
        let (g, c, s) = (gate.clone(), calls.clone(), served.clone());
        let hook = Prepare(Arc::new(move |next: &HealthView| {
            // What a query reads while this view is prepared: never the view itself.
            assert_ne!(s.load().state(0), next.state(0));
            c.fetch_add(1, Ordering::SeqCst);
            let mut open = g.0.lock().unwrap();
            while !*open {
                open = g.1.wait(open).unwrap();
            }
        }));
        let mut r = Release::new(served.clone());
        r.hand_over(view(Effective::Down), Some(&hook));
        // The hook blocks on the gate: the checker is not held, and sees its own view.
        assert_eq!(r.latest().state(0), Effective::Down);
        assert_eq!(
            served.load().state(0),
            Effective::Up,
            "not served before it is prepared"
        );
        // Two more views while the first is prepared: only the newest is prepared next.
        while calls.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        r.hand_over(view(Effective::Up), Some(&hook));
        r.hand_over(view(Effective::Degraded), Some(&hook));
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        wait_for(&served, Effective::Degraded);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "the overtaken view was skipped"
        );
        // A later view without a hook still goes through the thread, after the others.
        r.hand_over(view(Effective::Down), None);
        wait_for(&served, Effective::Down);
    }

    #[test]
    fn a_view_handed_over_by_a_checker_that_is_gone_is_never_served() {
        let served = Arc::new(ArcSwap::from_pointee(view(Effective::Up)));
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let entered = Arc::new(AtomicUsize::new(0));
        let (g, e) = (gate.clone(), entered.clone());
        let hook = Prepare(Arc::new(move |_: &HealthView| {
            e.fetch_add(1, Ordering::SeqCst);
            let mut open = g.0.lock().unwrap();
            while !*open {
                open = g.1.wait(open).unwrap();
            }
        }));
        let mut old = Release::new(served.clone());
        old.hand_over(view(Effective::Down), Some(&hook));
        while entered.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        // The checker restarts while its view is being prepared; the new one publishes.
        drop(old);
        let mut new = Release::new(served.clone());
        new.hand_over(view(Effective::Degraded), None);
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            served.load().state(0),
            Effective::Degraded,
            "the old view landed after"
        );
    }

    #[test]
    fn a_hook_that_panics_still_publishes_and_the_next_view_is_prepared() {
        let served = Arc::new(ArcSwap::from_pointee(view(Effective::Up)));
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let hook = Prepare(Arc::new(move |_: &HealthView| {
            assert!(c.fetch_add(1, Ordering::SeqCst) > 0, "an injected fault");
        }));
        let mut r = Release::new(served.clone());
        r.hand_over(view(Effective::Down), Some(&hook));
        wait_for(&served, Effective::Down);
        r.hand_over(view(Effective::Degraded), Some(&hook));
        wait_for(&served, Effective::Degraded);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
