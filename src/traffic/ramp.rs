//! Gradual failback: a region that recovers takes its clients back in `steps` equal
//! steps over `ramp`. The first step is taken at recovery, the last `ramp` later, so a
//! 5-minute ramp in 10 steps admits 10 % at once and 10 % more every 30 s. Which
//! clients come back at each step is the split's bucket order, so the clients of the
//! first step are the first again at every later one (a client moves once).

use std::time::Duration;

use super::split::Share;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failback {
    pub ramp: Duration,
    pub steps: u32,
}

impl Failback {
    fn step(&self) -> Duration {
        self.ramp / self.steps.max(1)
    }

    /// The share of its clients a region keeps `since` its recovery.
    pub fn keep(&self, since: Duration) -> Share {
        let steps = self.steps.max(1);
        let step = self.step();
        let taken = if step.is_zero() {
            steps
        } else {
            // Step 1 at recovery, step k at (k - 1) × step, all `steps` at `ramp`.
            let k = (since.as_nanos() / step.as_nanos()) as u64 + 1;
            if since >= self.ramp {
                steps
            } else {
                (k.min(u64::from(steps))) as u32
            }
        };
        if taken >= steps {
            Share::ALL
        } else {
            Share::from_fraction(f64::from(taken) / f64::from(steps))
        }
    }

    /// How long after `since` the share next changes; `None` once the ramp is done.
    pub fn next_change(&self, since: Duration) -> Option<Duration> {
        if since >= self.ramp || self.steps <= 1 || self.keep(since) == Share::ALL {
            return None;
        }
        let step = self.step();
        if step.is_zero() {
            return None;
        }
        let k = since.as_nanos() / step.as_nanos() + 1;
        let at = Duration::from_nanos(u64::try_from(step.as_nanos() * k).unwrap_or(u64::MAX));
        Some(at.min(self.ramp).saturating_sub(since))
    }

    /// Progress 0..=1 for the gauge.
    pub fn progress(&self, since: Duration) -> f64 {
        self.keep(since).fraction()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_equal_and_the_last_lands_at_the_end_of_the_ramp() {
        let f = Failback {
            ramp: Duration::from_secs(300),
            steps: 10,
        };
        let s = Duration::from_secs;
        let table = [
            (0, 0.1),
            (29, 0.1),
            (30, 0.2),
            (150, 0.6),
            (269, 0.9),
            (270, 1.0),
            (300, 1.0),
            (10_000, 1.0),
        ];
        for (at, want) in table {
            let got = f.keep(s(at)).fraction();
            assert!((got - want).abs() < 1e-6, "at {at}s: {got} != {want}");
        }
        assert_eq!(f.next_change(s(0)), Some(s(30)));
        assert_eq!(f.next_change(s(45)), Some(s(15)));
        assert_eq!(f.next_change(s(260)), Some(s(10)));
        assert_eq!(f.next_change(s(280)), None, "all back at 270 s");
        assert_eq!(f.next_change(s(300)), None);
    }

    #[test]
    fn one_step_is_all_at_once() {
        let f = Failback {
            ramp: Duration::from_secs(60),
            steps: 1,
        };
        assert_eq!(f.keep(Duration::ZERO), Share::ALL);
        assert_eq!(f.next_change(Duration::ZERO), None);
    }
}
