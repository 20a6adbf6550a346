//! The checker core on paused time, fed samples directly (no probe tasks): what it
//! publishes and how it labels each transition, alone and in a cluster.

mod core_tests {
    //! The core on paused time, fed samples directly (no probe tasks): what it publishes
    //! and how it labels each transition.
    use super::support::*;
    use crate::health::model::{MinUp, Probe};
    use crate::health::plan::PlanRegion;

    fn endpoint(name: &str, probe: Probe) -> Endpoint {
        Endpoint {
            name: name.into(),
            address: "127.0.0.1:9".parse().unwrap(),
            probe,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            serves: 0,
        }
    }

    pub(super) fn plan() -> Arc<HealthPlan> {
        let metric = Probe::Metric {
            url: "http://127.0.0.1:9".into(),
            query: "up".into(),
            fail_above: 1.0,
            recover_below: 0.5,
        };
        Arc::new(HealthPlan {
            demands: Default::default(),
            regions: vec![PlanRegion {
                name: "eu".into(),
                id: 0,
                endpoints: vec![endpoint("web", Probe::Tcp), endpoint("metric", metric)],
                thresholds: Thresholds {
                    cooldown: Duration::from_secs(30),
                    ..Thresholds::aggressive()
                },
                min_up: MinUp::Count(1),
                policies: "www.example".into(),
                capacity: None,
                failback: None,
                load: None,
                addresses: vec![],
                max_ttl: 30,
            }],
            config_overrides: BTreeMap::new(),
            clients: Arc::new([]),
            prepare: None,
        })
    }

    /// eu (id 0) ramps back in 3 steps over 60 s; us (id 1) serves 1000 req/s. Half
    /// the 2000 modelled clients (1 req/s each) rank eu first.
    fn shifting_core() -> Core {
        let region = |name: &str, id: u32, capacity, failback| PlanRegion {
            name: name.into(),
            id,
            endpoints: vec![endpoint("web", Probe::Tcp)],
            thresholds: Thresholds {
                cooldown: Duration::from_secs(30),
                ..Thresholds::aggressive()
            },
            min_up: MinUp::Count(1),
            policies: "www.example".into(),
            capacity,
            failback,
            load: None,
            addresses: vec![],
            max_ttl: 30,
        };
        let clients: Vec<traffic::Client> = (0..2000u64)
            .map(|i| traffic::Client {
                weight: 1.0,
                subnet: i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                list: if i % 2 == 0 { vec![0, 1] } else { vec![1, 0] },
                spill: true,
                policy: 0,
            })
            .collect();
        let plan = Arc::new(HealthPlan {
            demands: Default::default(),
            regions: vec![
                region(
                    "eu",
                    0,
                    None,
                    Some(traffic::Failback {
                        ramp: Duration::from_secs(60),
                        steps: 3,
                    }),
                ),
                region("us", 1, Some(1500.0), None),
            ],
            config_overrides: BTreeMap::new(),
            clients: clients.into(),
            prepare: None,
        });
        Core::offline(plan).0
    }

    /// DNSSEC's hook runs with each new view while readers still see the previous one
    /// (an answer the new view gives is signed before any query can get it), and off
    /// the checker's task: the checker has already gone on with the view it decided.
    #[tokio::test(start_paused = true)]
    async fn the_prepare_hook_sees_each_view_before_it_is_published() {
        use std::sync::Mutex as StdMutex;
        let seen: Arc<StdMutex<Vec<(Effective, Effective)>>> = Arc::default();
        let published: Arc<StdMutex<Option<Arc<ArcSwap<HealthView>>>>> = Arc::default();
        let mut p = (*plan()).clone();
        let (s, pb) = (seen.clone(), published.clone());
        p.prepare = Some(crate::health::plan::Prepare(Arc::new(
            move |next: &HealthView| {
                // What a query reads at this instant, against what is about to be published.
                let current = pb
                    .lock()
                    .unwrap()
                    .as_ref()
                    .map_or(Effective::Up, |v| v.load().state(0));
                s.lock().unwrap().push((current, next.state(0)));
            },
        )));
        let mut c = Core::offline(Arc::new(p)).0;
        let served = c.release.served().clone();
        *published.lock().unwrap() = Some(served.clone());
        feed(&mut c, "eu/web", &[FAIL, FAIL]).await;
        assert_eq!(
            eu(&c),
            Effective::Down,
            "the checker's own view moved at once"
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while served.load().state(0) != Effective::Down {
            assert!(std::time::Instant::now() < deadline, "never served");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let seen = seen.lock().unwrap();
        // The view that takes eu out went through the hook while eu was still served up.
        assert!(seen.contains(&(Effective::Up, Effective::Down)), "{seen:?}");
    }

    /// A failover is recorded with its phases from the first failing sample, kept in
    /// the state file, and restored from it by the next core.
    #[tokio::test(start_paused = true)]
    async fn a_failover_event_has_its_phases_and_survives_a_restart() {
        let mut c = Core::offline(plan()).0;
        feed(&mut c, "eu/web", &[OK, OK, OK, OK, FAIL, FAIL]).await;
        assert_eq!(eu(&c), Effective::Down);
        let events = c.failovers.all();
        let leave = events.first().expect("an event");
        assert_eq!(leave.direction, crate::health::status::Direction::Leave);
        // The aggressive preset leaves on 10 % errors: the first failing sample did it.
        assert_eq!(leave.phases.detect, 0.0, "{leave:?}");
        // Answers before it carried the plan's 30 s.
        assert_eq!(leave.phases.cache_bound, 30.0, "{leave:?}");
        assert!(!leave.over_target);
        let file = super::super::export::state_file(&c.probes, &c.overrides, &c.failovers);
        let text = serde_json::to_vec(&file).unwrap();
        let back = crate::health::store::StateFile::parse(&text).unwrap();
        let restored = Core::offline_from(plan(), &back).0;
        assert_eq!(restored.failovers.all(), events);
        // A region the plan no longer has, or a phase that is not a number, is dropped.
        let mut odd = back.clone();
        odd.failovers[0].region = "mars".into();
        assert!(
            Core::offline_from(plan(), &odd)
                .0
                .failovers
                .all()
                .is_empty()
        );
        let mut odd = back;
        odd.failovers[0].phases.publish = -1.0;
        assert!(
            Core::offline_from(plan(), &odd)
                .0
                .failovers
                .all()
                .is_empty()
        );
    }

    /// The phases that come after the publication: the first answer given from the new
    /// view, and (with a measured load) the traffic leaving and coming back.
    #[tokio::test(start_paused = true)]
    async fn an_event_gets_its_answer_and_traffic_phases_when_they_happen() {
        let mut c = Core::offline(plan()).0;
        let region = Target::Region("eu".into());
        // eu serves 1000 req/s by its load query before it is forced down.
        c.observe_load("eu", Some(1000.0));
        c.set_override(region.clone(), Some(OverrideKind::ForceDown), None)
            .unwrap();
        c.publish(true);
        let phases = |c: &Core| c.failovers.all()[0].phases;
        assert_eq!(phases(&c).answer, None, "no query yet");
        // A query is answered from the new view 250 ms later.
        tokio::time::advance(Duration::from_millis(250)).await;
        c.current_view()
            .answered
            .mark_now(Instant::now().into_std());
        tokio::time::advance(Duration::from_secs(1)).await;
        c.poll_answers();
        assert_eq!(phases(&c).answer, Some(0.25));
        // Later views answering do not move it.
        c.publish(true);
        c.current_view()
            .answered
            .mark_now(Instant::now().into_std());
        c.poll_answers();
        assert_eq!(phases(&c).answer, Some(0.25));
        // The measured load drains as caches expire: 10 % of 1000 ends the phase.
        tokio::time::advance(Duration::from_secs(14)).await;
        c.observe_load("eu", Some(300.0));
        assert_eq!(phases(&c).traffic, None);
        tokio::time::advance(Duration::from_secs(15)).await;
        c.observe_load("eu", Some(60.0));
        assert_eq!(phases(&c).traffic, Some(30.25));
        let metric = c
            .metrics
            .failover_phase
            .with_label_values(&["traffic"])
            .get_sample_count();
        assert_eq!(metric, 1);
        // Back: the return's traffic phase ends at 90 % of the level before the leave.
        c.set_override(region, None, None).unwrap();
        c.publish(true);
        let back = c.failovers.all()[0].clone();
        assert_eq!(back.direction, Direction::Return);
        tokio::time::advance(Duration::from_secs(20)).await;
        c.observe_load("eu", Some(850.0));
        assert_eq!(phases(&c).traffic, None);
        tokio::time::advance(Duration::from_secs(10)).await;
        c.observe_load("eu", Some(950.0));
        assert_eq!(phases(&c).traffic, Some(30.0));
        // A view overtaken before any query: the first answer from the view served
        // since ends the phase.
        c.set_override(
            Target::Region("eu".into()),
            Some(OverrideKind::ForceDown),
            None,
        )
        .unwrap();
        c.publish(true);
        tokio::time::advance(Duration::from_millis(100)).await;
        c.publish(true);
        tokio::time::advance(Duration::from_millis(400)).await;
        c.current_view()
            .answered
            .mark_now(Instant::now().into_std());
        c.poll_answers();
        assert_eq!(phases(&c).answer, Some(0.5));
    }

    fn keep_admit(c: &Core, id: u32) -> (f64, f64) {
        let r = c.current_view().region(id);
        (
            (r.keep.fraction() * 100.0).round() / 100.0,
            (r.admit.fraction() * 100.0).round() / 100.0,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_down_region_spills_up_to_capacity_and_ramps_back_in_steps() {
        let mut c = shifting_core();
        assert!(!c.current_view().shifting);
        feed(&mut c, "eu/web", &[FAIL, FAIL]).await;
        assert_eq!(eu(&c), Effective::Down);
        // us has 500 req/s spare for eu's 1000: it admits half of the displaced.
        assert_eq!(keep_admit(&c, 0).0, 0.0);
        let (_, us_admit) = keep_admit(&c, 1);
        assert!((0.45..=0.55).contains(&us_admit), "{us_admit}");
        assert!(c.current_view().shifting);
        // Back after the 30 s cooldown: a third at once, a third more every 20 s.
        feed(&mut c, "eu/web", &[OK; 31]).await;
        assert_eq!(eu(&c), Effective::Up);
        assert_eq!(keep_admit(&c, 0).0, 0.33);
        // The recovery came with the 30th sample, one second ago.
        let step = c
            .shifting
            .next_step()
            .unwrap()
            .saturating_duration_since(Instant::now());
        assert_eq!(step, Duration::from_secs(19));
        feed(&mut c, "eu/web", &[OK; 20]).await;
        assert_eq!(keep_admit(&c, 0).0, 0.67);
        // A failure during the ramp restarts it at the next recovery.
        feed(&mut c, "eu/web", &[FAIL, FAIL]).await;
        assert_eq!(keep_admit(&c, 0).0, 0.0);
        feed(&mut c, "eu/web", &[OK; 31]).await;
        assert_eq!(keep_admit(&c, 0).0, 0.33, "the ramp starts over");
        feed(&mut c, "eu/web", &[OK; 40]).await;
        assert_eq!(keep_admit(&c, 0), (1.0, 1.0));
        assert_eq!(c.shifting.next_step(), None);
        assert!(!c.current_view().shifting, "all back: plain answers again");
    }

    /// eu (capacity 1000) and us (unlimited), 2000 req/s of demand for one policy whose
    /// prior puts 1000 on each; the answers then say where the queries really come from.
    fn estimating_core() -> (Core, crate::metrics::PolicyCounters) {
        let mut plan = (*shifting_core().plan).clone();
        plan.regions[0].failback = None;
        plan.regions[0].capacity = Some(1000.0);
        plan.regions[1].capacity = None;
        plan.demands = vec![traffic::demand::PolicyDemand {
            name: "www.example".into(),
            demand: 2000.0,
            candidates: vec![0, 1],
        }]
        .into();
        let c = Core::offline(Arc::new(plan)).0;
        let counters = c
            .metrics
            .policies
            .attach(std::iter::once((
                "www.example",
                vec!["eu", "us"],
                "servfail",
            )))
            .remove(0);
        (c, counters)
    }

    fn shed_of(c: &Core, id: u32) -> f64 {
        (c.current_view().region(id).shed.fraction() * 1000.0).round() / 1000.0
    }

    /// Queries by first-ranked region, read by the checker as its tick would.
    fn counted(c: &mut Core, counters: &crate::metrics::PolicyCounters, eu: u64, us: u64) {
        counters.ranked_first(0, eu);
        counters.ranked_first(1, us);
        if c.sample_demand() {
            c.publish(true);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn answer_shares_replace_the_prior_and_shedding_holds_between_its_marks() {
        let (mut c, counters) = estimating_core();
        let source = |c: &Core| report::status(c).demand[0].source;
        use traffic::demand::Source;
        // The prior: 1000 on eu, at its capacity (not past it): nothing sheds.
        counted(&mut c, &counters, 0, 0);
        assert_eq!(source(&c), Source::AddressSpace);
        assert_eq!(shed_of(&c, 0), 1.0);
        // Fewer than 1000 queries in the window: still the prior.
        counted(&mut c, &counters, 900, 99);
        assert_eq!(source(&c), Source::AddressSpace);
        // 90 % of the queries rank eu first: 1800 req/s on a 1000 region. It sheds to its
        // 900 mark: it keeps half its clients, the others go to us.
        counted(&mut c, &counters, 8_100, 901);
        assert_eq!(source(&c), Source::Answers);
        assert_eq!(shed_of(&c, 0), 0.5);
        let status = report::status(&c);
        let eu = &status.regions[0];
        assert!(eu.shedding && eu.load_source == Some("answers"), "{eu:?}");
        assert!((eu.load.unwrap() - 900.0).abs() < 50.0, "{eu:?}");
        assert!(c.current_view().shifting && !c.current_view().region(0).accepts());
        // Demand falls to 950 on eu: between the marks, so it still sheds (to 900).
        counted(&mut c, &counters, 0, 8_947);
        assert_eq!(source(&c), Source::Answers);
        assert!(report::status(&c).regions[0].shedding);
        assert_eq!(shed_of(&c, 0), 0.947);
        // Below the 900 mark: shedding stops, every client is back.
        counted(&mut c, &counters, 0, 2_300);
        assert!(!report::status(&c).regions[0].shedding);
        assert_eq!(shed_of(&c, 0), 1.0);
        assert!(!c.current_view().shifting);
        // Each start and stop is a failover event, cause `shedding`.
        let events: Vec<(Direction, String)> = report::status(&c)
            .failovers
            .iter()
            .map(|e| (e.direction, e.cause.clone()))
            .collect();
        assert_eq!(
            events,
            vec![
                (Direction::Return, "shedding".to_string()),
                (Direction::Leave, "shedding".to_string())
            ]
        );
        // The window decays: with no more queries the answers age out and the prior
        // (1000 on eu, not past capacity) is back.
        for _ in 0..200 {
            tokio::time::advance(traffic::demand::SAMPLE_EVERY).await;
            counted(&mut c, &counters, 0, 0);
        }
        assert_eq!(source(&c), Source::AddressSpace);
        assert_eq!(shed_of(&c, 0), 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_measured_load_above_the_model_leaves_less_room_and_an_unread_one_holds() {
        let mut c = shifting_core();
        feed(&mut c, "eu/web", &[FAIL, FAIL]).await;
        let (_, modelled) = keep_admit(&c, 1);
        assert!((0.45..=0.55).contains(&modelled), "{modelled}");
        // The model sends us 2000 req/s (its own 1000, eu's 500 it admits, and eu's other
        // 500, which have nowhere else to go: overflow spills by rank). us measures 2300:
        // 300 of other traffic, so only 200 of its 1500 are left for eu's clients.
        assert!(c.observe_load("us", Some(2300.0)));
        c.publish(true);
        let (_, admit) = keep_admit(&c, 1);
        assert!((0.17..=0.23).contains(&admit), "{admit}");
        // The next publications keep that (the measurement is not compared again with
        // the model it changed).
        feed(&mut c, "us/web", &[OK; 3]).await;
        assert_eq!(keep_admit(&c, 1).1, admit);
        // Prometheus unreadable: the last value holds.
        assert!(!c.observe_load("us", None));
        c.publish(true);
        assert_eq!(keep_admit(&c, 1).1, admit);
        assert_eq!(report::status(&c).regions[1].load, Some(2300.0));
        assert_eq!(
            report::status(&c).regions[1].load_source,
            Some("prometheus")
        );
        // A small change does not recompute; a large one does.
        assert!(!c.observe_load("us", Some(2320.0)));
        assert!(c.observe_load("us", Some(1000.0)));
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_samples_are_published_together_and_a_failure_at_once() {
        use super::super::core::{COALESCE, Intake};
        let mut c = core();
        feed(&mut c, "eu/web", &[OK, OK]).await;
        let g = c.probes.get("eu/web").unwrap().generation;
        let before = c.current_view();
        for _ in 0..50 {
            assert_eq!(c.intake("eu/web", g, OK), Intake::Quiet);
        }
        assert!(
            Arc::ptr_eq(&before, &c.current_view()),
            "no publication per quiet sample"
        );
        let due = c.publish_due.expect("one publication owed for them all");
        assert!(due <= Instant::now() + COALESCE);
        // One failure in the window is past the error rate (aggressive thresholds):
        // the transition is published at once and persisted; the next failure moves
        // nothing and waits.
        assert_eq!(
            c.intake("eu/web", g, FAIL),
            Intake::Publish { persist: true }
        );
        c.publish(true);
        assert_eq!(eu(&c), Effective::Down);
        assert_eq!(c.intake("eu/web", g, FAIL), Intake::Quiet);
        assert_eq!(c.intake("eu/web", g + 1, FAIL), Intake::Ignored, "stale");
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_for_a_while_ends_by_itself_and_is_recorded() {
        let mut c = core();
        feed(&mut c, "eu/web", &[OK, OK]).await;
        c.set_override_until(
            Target::Region("eu".into()),
            Some(OverrideKind::Drain),
            Some("deploy".into()),
            None,
            Some(Duration::from_secs(30)),
        )
        .unwrap();
        c.expire_overrides();
        c.publish(true);
        assert_eq!(eu(&c), Effective::Down);
        let due = c
            .overrides
            .next_expiry()
            .unwrap()
            .saturating_duration_since(Instant::now());
        assert_eq!(due, Duration::from_secs(30));
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(!c.expire_overrides(), "not yet");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(c.expire_overrides());
        c.publish(true);
        assert_eq!(eu(&c), Effective::Up);
        assert_eq!(c.overrides.next_expiry(), None);
        let last = causes(&c).pop().unwrap();
        assert_eq!(last, ("eu".into(), "down>up".into(), "override_cleared"));
        assert!(
            c.set_override_until(
                Target::Region("eu".into()),
                None,
                None,
                None,
                Some(Duration::from_secs(5))
            )
            .is_err(),
            "a duration needs an override to end"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_drain_keeps_the_rest_of_the_region_in_the_answers() {
        let mut c = shifting_core();
        c.set_override_fraction(
            Target::Region("eu".into()),
            Some(OverrideKind::Drain),
            Some("canary".into()),
            Some(0.3),
        )
        .unwrap();
        c.publish(true);
        assert_eq!(eu(&c), Effective::Up, "a partial drain is not a state");
        assert_eq!(keep_admit(&c, 0).0, 0.7);
        assert!(c.current_view().shifting);
        for bad in [0.0, 1.5, f64::NAN] {
            let r = c.set_override_fraction(
                Target::Region("eu".into()),
                Some(OverrideKind::Drain),
                None,
                Some(bad),
            );
            assert!(r.is_err(), "{bad}");
        }
        // A full drain is today's drain.
        c.set_override_fraction(
            Target::Region("eu".into()),
            Some(OverrideKind::Drain),
            None,
            Some(1.0),
        )
        .unwrap();
        c.publish(true);
        assert_eq!(eu(&c), Effective::Down);
    }

    #[tokio::test(start_paused = true)]
    async fn each_transition_is_labelled_by_its_cause() {
        let mut c = core();
        assert_eq!(eu(&c), Effective::Up);
        // Two failed probes in a row (aggressive: fail_consecutive 2).
        feed(&mut c, "eu/web", &[OK, FAIL, FAIL]).await;
        assert_eq!(eu(&c), Effective::Down);
        // Healthy again: held by the 30 s cooldown, then back.
        feed(&mut c, "eu/web", &[OK; 5]).await;
        assert_eq!(eu(&c), Effective::Down, "cooldown");
        feed(&mut c, "eu/web", &[OK; 25]).await;
        assert_eq!(eu(&c), Effective::Up);
        // The metric vetoes the region although its endpoint is up, then clears.
        feed(&mut c, "eu/metric", &[FAIL, FAIL]).await;
        assert_eq!(eu(&c), Effective::Down);
        // An operator drain and its removal.
        c.set_override(
            Target::Region("eu".into()),
            Some(OverrideKind::ForceUp),
            None,
        )
        .unwrap();
        c.publish(true);
        assert_eq!(eu(&c), Effective::Up);
        c.set_override(Target::Region("eu".into()), None, None)
            .unwrap();
        c.publish(true);
        assert_eq!(eu(&c), Effective::Down, "the metric still vetoes");
        let got = causes(&c);
        let want: Vec<(String, String, &str)> = [
            ("eu/web", "up>down", "consecutive_failures"),
            ("eu", "up>down", "endpoints"),
            ("eu/web", "down>down", "cooldown_held"),
            ("eu/web", "down>up", "recovered"),
            ("eu", "down>up", "endpoints"),
            ("eu/metric", "up>down", "metric_veto"),
            ("eu", "up>down", "metric_veto"),
            ("eu", "down>up", "override_set"),
            ("eu", "up>down", "override_cleared"),
        ]
        .iter()
        .map(|(k, t, c)| (k.to_string(), t.to_string(), *c))
        .collect();
        assert_eq!(got, want);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_falls_silent_is_restarted_and_its_silence_labelled() {
        let mut c = core();
        feed(&mut c, "eu/web", &[OK, OK, OK]).await;
        feed(&mut c, "eu/metric", &[OK]).await;
        // No reports for longer than 2 intervals + timeout + 1 s, twice.
        for _ in 0..2 {
            tokio::time::advance(Duration::from_secs(4)).await;
            let metric_generation = c.probes.get("eu/metric").map(|e| e.generation).unwrap();
            c.observe("eu/metric", metric_generation, OK, None);
            c.revive_silent_probes();
            c.publish(true);
        }
        assert_eq!(eu(&c), Effective::Down);
        let got = causes(&c);
        assert_eq!(
            got.first().map(|(k, t, c)| (k.as_str(), t.as_str(), *c)),
            Some(("eu/web", "up>down", "probe_silent")),
            "{got:?}"
        );
        let text = &c.history.iter().next().unwrap().reason;
        assert!(text.contains("did not report"), "{text}");
    }
}

mod support {
    pub(super) use std::collections::BTreeMap;
    pub(super) use std::sync::Arc;
    pub(super) use std::time::Duration;

    pub(super) use arc_swap::ArcSwap;
    pub(super) use tokio::sync::watch;
    pub(super) use tokio::time::Instant;

    pub(super) use super::super::core::Core;
    pub(super) use super::super::report;
    pub(super) use crate::health::model::{Endpoint, Thresholds};
    pub(super) use crate::health::peers::{OverrideRecord, OverrideTarget};
    pub(super) use crate::health::plan::HealthPlan;
    pub(super) use crate::health::state::Sample;
    pub(super) use crate::health::status::{Direction, Target};
    pub(super) use crate::health::view::{Effective, HealthView, Override, OverrideKind};
    pub(super) use crate::traffic;

    pub(super) fn core() -> Core {
        Core::offline(super::core_tests::plan()).0
    }

    pub(super) const OK: Sample = Sample {
        ok: true,
        latency: Duration::from_millis(5),
    };
    pub(super) const FAIL: Sample = Sample {
        ok: false,
        latency: Duration::from_millis(500),
    };

    /// One sample a second, each followed by a publication.
    pub(super) async fn feed(c: &mut Core, key: &str, samples: &[Sample]) {
        let generation = c.probes.get(key).map(|e| e.generation).unwrap();
        for s in samples {
            tokio::time::advance(Duration::from_secs(1)).await;
            c.observe(key, generation, *s, None);
            c.publish(true);
        }
    }

    pub(super) fn causes(c: &Core) -> Vec<(String, String, &'static str)> {
        c.history
            .iter()
            .map(|t| (t.key.clone(), format!("{}>{}", t.from, t.to), t.cause))
            .collect()
    }

    pub(super) fn eu(c: &Core) -> Effective {
        c.current_view().state(0)
    }
}

mod cluster_tests {
    //! The core in a cluster, on paused time: peers' verdicts arrive as the gossip
    //! runtime would hand them over, and the shared state decides.
    use super::super::cluster::ClusterSide;
    use super::support::*;
    use crate::health::peers::{Local, Peer, Peers, Policy, Quorum, Verdict};

    fn verdict(state: Effective) -> Verdict {
        Verdict {
            state,
            error_rate: 0.0,
            latency_ms: None,
            since: 0,
        }
    }

    fn peer(name: &str, web: Effective) -> Peer {
        Peer {
            name: name.into(),
            address: "127.0.0.2:7946".parse().unwrap(),
            live: true,
            last_heard: Some(Instant::now()),
            verdicts: [("eu/web".to_string(), verdict(web))].into(),
            overrides: BTreeMap::new(),
        }
    }

    fn clustered() -> (Core, watch::Receiver<Arc<Local>>) {
        let mut c = core();
        let (local_tx, local_rx) = watch::channel(Arc::new(Local::default()));
        let (_peers_tx, peers_rx) = watch::channel(Arc::new(Peers::default()));
        c.join(ClusterSide {
            policy: Policy {
                instance: "ns1".into(),
                quorum: Quorum::Majority,
                isolation_timeout: Duration::from_secs(30),
            },
            peers: peers_rx,
            local: Arc::new(local_tx),
        });
        (c, local_rx)
    }

    fn set_peers(c: &mut Core, peers: Vec<Peer>) {
        if let Some(cl) = c.cluster.as_mut() {
            cl.set_peers(Arc::new(Peers { peers }));
        }
        c.apply_peer_overrides();
        c.publish(true);
    }

    #[tokio::test(start_paused = true)]
    async fn one_vantage_point_alone_moves_nothing_and_the_shared_cooldown_holds() {
        let (mut c, local) = clustered();
        set_peers(
            &mut c,
            vec![peer("ns2", Effective::Up), peer("ns3", Effective::Up)],
        );
        feed(&mut c, "eu/web", &[FAIL, FAIL]).await;
        assert_eq!(c.probes.get("eu/web").unwrap().measured(), Effective::Down);
        assert_eq!(eu(&c), Effective::Up, "only this instance sees it down");
        assert_eq!(
            c.current_view().ttl_cap(0),
            Some(1),
            "votes split: the next probe round may tip it, so answers last a round"
        );
        assert_eq!(
            local.borrow().verdicts["eu/web"].state,
            Effective::Down,
            "but says so"
        );
        // A second vantage point agrees: down, labelled by the quorum.
        set_peers(
            &mut c,
            vec![peer("ns2", Effective::Down), peer("ns3", Effective::Up)],
        );
        assert_eq!(eu(&c), Effective::Down);
        assert!(
            causes(&c).contains(&("eu/web".into(), "up>down".into(), "quorum")),
            "{:?}",
            causes(&c)
        );
        // The peers recover at once; the shared state waits out the 30 s cooldown.
        set_peers(
            &mut c,
            vec![peer("ns2", Effective::Up), peer("ns3", Effective::Up)],
        );
        assert_eq!(eu(&c), Effective::Down, "cooldown on the shared state");
        // (Heard all along: each `set_peers` is a fresh poll of the gossip state.)
        tokio::time::advance(Duration::from_secs(29)).await;
        set_peers(
            &mut c,
            vec![peer("ns2", Effective::Up), peer("ns3", Effective::Up)],
        );
        assert_eq!(eu(&c), Effective::Down);
        tokio::time::advance(Duration::from_secs(2)).await;
        set_peers(
            &mut c,
            vec![peer("ns2", Effective::Up), peer("ns3", Effective::Up)],
        );
        assert_eq!(eu(&c), Effective::Up, "two of three say up, cooldown over");
    }

    #[tokio::test(start_paused = true)]
    async fn alone_past_the_timeout_it_decides_from_its_own_view() {
        let (mut c, _local) = clustered();
        set_peers(
            &mut c,
            vec![peer("ns2", Effective::Up), peer("ns3", Effective::Up)],
        );
        feed(&mut c, "eu/web", &[FAIL, FAIL]).await;
        assert_eq!(eu(&c), Effective::Up);
        // The failure detector has both dead; within the timeout their last votes hold.
        let mut silent = vec![peer("ns2", Effective::Up), peer("ns3", Effective::Up)];
        for p in &mut silent {
            p.live = false;
        }
        set_peers(&mut c, silent);
        tokio::time::advance(Duration::from_secs(20)).await;
        c.publish(true);
        assert_eq!(
            eu(&c),
            Effective::Up,
            "20 s of silence: the last shared view"
        );
        tokio::time::advance(Duration::from_secs(11)).await;
        c.publish(true);
        assert!(c.cluster.as_ref().unwrap().is_isolated());
        assert_eq!(eu(&c), Effective::Down, "isolated: its own probes decide");
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_operator_action_wins_whatever_the_clocks_say() {
        let (mut c, local) = clustered();
        // A drain set on ns2, whose clock runs an hour ahead of ours.
        let ahead = c.overrides.unix_ms() + 3_600_000;
        let drain = OverrideRecord {
            state: Some(Override {
                kind: OverrideKind::Drain,
                reason: Some("on ns2".into()),
                since: ahead / 1000,
                fraction: None,
                until: None,
            }),
            stamp: ahead,
            by: "ns2".into(),
        };
        let mut ns2 = peer("ns2", Effective::Up);
        ns2.overrides
            .insert(OverrideTarget::Region("eu".into()), drain.clone());
        // An override for a region this instance does not have is ignored.
        ns2.overrides.insert(
            OverrideTarget::Region("mars".into()),
            OverrideRecord {
                by: "ns2".into(),
                ..drain.clone()
            },
        );
        set_peers(&mut c, vec![ns2.clone()]);
        assert_eq!(eu(&c), Effective::Down, "ns2's drain applies here");
        assert!(c.overrides.region("mars").is_none());
        // Cleared here, later, on a clock an hour behind: the clear still wins.
        c.set_override(Target::Region("eu".into()), None, None)
            .unwrap();
        c.publish(true);
        let mine = local.borrow().overrides[&OverrideTarget::Region("eu".into())].clone();
        assert!(mine.newer_than(&drain), "{mine:?}");
        assert_eq!(mine.state, None);
        set_peers(&mut c, vec![ns2]);
        assert_eq!(
            eu(&c),
            Effective::Up,
            "ns2's older record does not come back"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_record_no_instance_could_make_is_ignored() {
        let (mut c, _local) = clustered();
        let stamp = c.overrides.unix_ms() + 1;
        let mut ns2 = peer("ns2", Effective::Up);
        for (fraction, kind) in [
            (Some(5.0), OverrideKind::Drain),
            (Some(0.5), OverrideKind::ForceUp),
        ] {
            ns2.overrides.insert(
                OverrideTarget::Region("eu".into()),
                OverrideRecord {
                    state: Some(Override {
                        kind,
                        reason: None,
                        since: stamp / 1000,
                        fraction,
                        until: None,
                    }),
                    stamp,
                    by: "ns2".into(),
                },
            );
            set_peers(&mut c, vec![ns2.clone()]);
            assert!(c.overrides.regions().is_empty(), "{fraction:?} {kind:?}");
        }
        // A plausible one applies.
        if let Some(r) = ns2.overrides.get_mut(&OverrideTarget::Region("eu".into()))
            && let Some(o) = r.state.as_mut()
        {
            o.kind = OverrideKind::Drain;
            o.fraction = Some(0.5);
        }
        set_peers(&mut c, vec![ns2]);
        assert!(c.overrides.region("eu").is_some());
    }
}

mod supervisor_tests {
    //! The checker under its supervisor, on a real runtime: a panic inside the core
    //! (here from the publication hook, the one piece of code a caller plugs in) stops
    //! that core, and a new one takes over from the state file.

    use super::super::HealthHandle;
    use super::support::*;
    use crate::metrics::Metrics;

    /// A state file that cannot be written (its folder is a file) is logged and counted;
    /// overrides still apply and the checker goes on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_state_file_that_cannot_be_written_is_counted_and_serving_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("not-a-folder"), "x").unwrap();
        let state = dir.path().join("not-a-folder/state.json");
        let metrics = Arc::new(Metrics::new());
        let h = HealthHandle::start(
            super::core_tests::plan(),
            Some(state),
            Duration::from_secs(2),
            metrics.clone(),
            None,
        );
        h.set_override(
            Target::Region("eu".into()),
            Some(OverrideKind::Drain),
            Some("game day".into()),
            None,
            None,
        )
        .await
        .unwrap();
        assert_eq!(h.view.load().state(0), Effective::Down, "the drain applies");
        assert!(metrics.state_file_write_failures.get() >= 1);
        assert!(h.status().await.is_some(), "the checker goes on");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_checker_that_panics_is_restarted_counted_and_keeps_its_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        // A region name no other test uses: the fault is armed by name.
        let mut p = (*super::core_tests::plan()).clone();
        p.regions[0].name = "eu-supervised".into();
        let metrics = Arc::new(Metrics::new());
        let h = HealthHandle::start(
            Arc::new(p),
            Some(state.clone()),
            Duration::from_secs(2),
            metrics.clone(),
            None,
        );
        let region = || Target::Region("eu-supervised".into());
        h.set_override(
            region(),
            Some(OverrideKind::ForceUp),
            Some("before".into()),
            None,
            None,
        )
        .await
        .unwrap();
        crate::health::checker::core::fault::ARMED
            .lock()
            .unwrap()
            .push("eu-supervised".into());
        // This publication panics: the reply is lost with the core.
        let lost = h
            .set_override(region(), Some(OverrideKind::Drain), None, None, None)
            .await;
        assert_eq!(lost, Err(crate::health::status::OverrideError::Unavailable));
        let deadline = Instant::now() + Duration::from_secs(10);
        while metrics.health_checker_restarts.get() == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(metrics.health_checker_restarts.get(), 1);
        // The new core took the override persisted before the panic from the state file.
        let status = h.status().await.expect("the checker answers again");
        assert_eq!(
            status.regions[0].r#override.as_ref().map(|o| o.kind),
            Some(OverrideKind::ForceUp)
        );
        h.set_override(region(), Some(OverrideKind::Drain), None, None, None)
            .await
            .unwrap();
        assert_eq!(h.view.load().state(0), Effective::Down, "it decides again");
        // Ready again once its first probe round is in (or the startup wait ran out).
        tokio::time::timeout(Duration::from_secs(10), h.wait_ready())
            .await
            .unwrap();
    }
}
