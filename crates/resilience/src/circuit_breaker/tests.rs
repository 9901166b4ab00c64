use super::*;

fn breaker(threshold: u32, probes: u32) -> CircuitBreaker {
    CircuitBreaker::new(CircuitBreakerConfig {
        failure_threshold: threshold,
        reset_timeout: Duration::from_secs(30),
        half_open_timeout: Duration::from_secs(5),
        half_open_max_probes: probes,
    })
    .unwrap()
}

fn fail(breaker: &CircuitBreaker, now: Instant) -> Option<Transition> {
    let permit = breaker.try_acquire(now).unwrap();
    breaker.record(permit, Outcome::Failure, now)
}

fn open_breaker(breaker: &CircuitBreaker, now: Instant) {
    for _ in 0..breaker.config().failure_threshold {
        let _ = fail(breaker, now);
    }
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn opens_after_threshold_consecutive_failures() {
    let breaker = breaker(3, 1);
    let now = Instant::now();
    assert_eq!(fail(&breaker, now), None);
    assert_eq!(fail(&breaker, now), None);
    let transition = fail(&breaker, now).expect("third failure opens");
    assert_eq!(transition.from, State::Closed);
    assert_eq!(transition.to, State::Open);
    assert_eq!(transition.cause, TransitionCause::FailureThreshold);
    assert!(breaker.try_acquire(now).is_err());
}

#[test]
fn success_resets_failure_count() {
    let breaker = breaker(3, 1);
    let now = Instant::now();
    let _ = fail(&breaker, now);
    let _ = fail(&breaker, now);
    let permit = breaker.try_acquire(now).unwrap();
    assert_eq!(breaker.record(permit, Outcome::Success, now), None);
    let _ = fail(&breaker, now);
    let _ = fail(&breaker, now);
    assert_eq!(breaker.state(), State::Closed);
}

#[test]
fn ignored_outcomes_do_not_count() {
    let breaker = breaker(2, 1);
    let now = Instant::now();
    for _ in 0..10 {
        let permit = breaker.try_acquire(now).unwrap();
        assert_eq!(breaker.record(permit, Outcome::Ignored, now), None);
    }
    assert_eq!(breaker.state(), State::Closed);
}

#[test]
fn open_rejects_until_reset_timeout() {
    let breaker = breaker(1, 1);
    let start = Instant::now();
    open_breaker(&breaker, start);

    let rejected = breaker
        .try_acquire(start + Duration::from_secs(29))
        .unwrap_err();
    assert_eq!(rejected.retry_at, start + Duration::from_secs(30));
    assert!(!breaker.would_admit(start + Duration::from_secs(29)));
    assert!(breaker.would_admit(start + Duration::from_secs(30)));

    let probe = breaker
        .try_acquire(start + Duration::from_secs(30))
        .unwrap();
    assert!(probe.is_probe());
    let transition = probe.transition().expect("reset timeout turns half-open");
    assert_eq!(
        (transition.from, transition.to),
        (State::Open, State::HalfOpen)
    );
    breaker.release(probe);
}

#[test]
fn half_open_admits_one_probe() {
    let breaker = breaker(1, 1);
    let start = Instant::now();
    open_breaker(&breaker, start);
    let later = start + Duration::from_secs(31);

    let probe = breaker.try_acquire(later).unwrap();
    let second = breaker.try_acquire(later).unwrap_err();
    assert_eq!(second.retry_at, later + Duration::from_secs(5));
    breaker.release(probe);
}

#[test]
fn half_open_admits_configured_probes() {
    let breaker = breaker(1, 3);
    let start = Instant::now();
    open_breaker(&breaker, start);
    let later = start + Duration::from_secs(31);

    let probes: Vec<_> = (0..3)
        .map(|_| breaker.try_acquire(later).unwrap())
        .collect();
    assert!(breaker.try_acquire(later).is_err());
    for probe in probes {
        breaker.release(probe);
    }
}

#[test]
fn probe_success_closes() {
    let breaker = breaker(1, 1);
    let start = Instant::now();
    open_breaker(&breaker, start);
    let later = start + Duration::from_secs(31);

    let probe = breaker.try_acquire(later).unwrap();
    let transition = breaker.record(probe, Outcome::Success, later + Duration::from_secs(1));
    assert_eq!(transition.map(|t| t.to), Some(State::Closed));
    assert_eq!(breaker.state(), State::Closed);
    assert!(breaker.try_acquire(later).is_ok_and(|p| !p.is_probe()));
}

#[test]
fn probe_failure_reopens_for_full_reset_timeout() {
    let breaker = breaker(1, 1);
    let start = Instant::now();
    open_breaker(&breaker, start);
    let probe_at = start + Duration::from_secs(31);
    let failed_at = probe_at + Duration::from_secs(1);

    let probe = breaker.try_acquire(probe_at).unwrap();
    let transition = breaker.record(probe, Outcome::Failure, failed_at).unwrap();
    assert_eq!(transition.cause, TransitionCause::ProbeFailed);
    assert_eq!(breaker.state(), State::Open);

    let rejected = breaker
        .try_acquire(failed_at + Duration::from_secs(29))
        .unwrap_err();
    assert_eq!(rejected.retry_at, failed_at + Duration::from_secs(30));
}

#[test]
fn slow_probe_counts_as_failed() {
    let breaker = breaker(1, 1);
    let start = Instant::now();
    open_breaker(&breaker, start);
    let probe_at = start + Duration::from_secs(31);

    let probe = breaker.try_acquire(probe_at).unwrap();
    // Another caller arrives after the probe overran half_open_timeout.
    let overdue = probe_at + Duration::from_secs(6);
    let rejected = breaker.try_acquire(overdue).unwrap_err();
    let transition = rejected.transition.unwrap();
    assert_eq!(transition.cause, TransitionCause::ProbeTimedOut);
    assert_eq!(breaker.state(), State::Open);

    // The late result of the probe changes nothing.
    assert_eq!(breaker.record(probe, Outcome::Success, overdue), None);
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn probe_success_after_timeout_reopens() {
    let breaker = breaker(1, 1);
    let start = Instant::now();
    open_breaker(&breaker, start);
    let probe_at = start + Duration::from_secs(31);

    let probe = breaker.try_acquire(probe_at).unwrap();
    let transition = breaker.record(probe, Outcome::Success, probe_at + Duration::from_secs(6));
    assert_eq!(
        transition.map(|t| t.cause),
        Some(TransitionCause::ProbeTimedOut)
    );
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn released_probe_frees_slot() {
    let breaker = breaker(1, 1);
    let start = Instant::now();
    open_breaker(&breaker, start);
    let later = start + Duration::from_secs(31);

    let probe = breaker.try_acquire(later).unwrap();
    breaker.release(probe);
    assert_eq!(breaker.state(), State::HalfOpen);
    let probe = breaker.try_acquire(later).unwrap();
    assert!(probe.is_probe());
    breaker.release(probe);
}

#[test]
fn late_failure_while_open_changes_nothing() {
    let breaker = breaker(2, 1);
    let now = Instant::now();
    let early = breaker.try_acquire(now).unwrap();
    open_breaker(&breaker, now);
    assert_eq!(
        breaker.record(early, Outcome::Failure, now + Duration::from_secs(10)),
        None
    );
    let rejected = breaker
        .try_acquire(now + Duration::from_secs(29))
        .unwrap_err();
    assert_eq!(rejected.retry_at, now + Duration::from_secs(30));
}

#[test]
fn concurrent_failures_open_once() {
    use std::sync::Arc;

    let breaker = Arc::new(breaker(100, 1));
    let now = Instant::now();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let breaker = Arc::clone(&breaker);
            std::thread::spawn(move || {
                let mut opened = 0;
                for _ in 0..100 {
                    if let Ok(permit) = breaker.try_acquire(now) {
                        if breaker.record(permit, Outcome::Failure, now).is_some() {
                            opened += 1;
                        }
                    }
                }
                opened
            })
        })
        .collect();
    let opened: u32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(opened, 1);
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn invalid_settings_are_named() {
    let zero_threshold = CircuitBreakerConfig {
        failure_threshold: 0,
        ..CircuitBreakerConfig::default()
    };
    assert_eq!(
        CircuitBreaker::new(zero_threshold)
            .map(|_| ())
            .map_err(|e| e.field),
        Err("failure_threshold")
    );
    let zero_probes = CircuitBreakerConfig {
        half_open_max_probes: 0,
        ..CircuitBreakerConfig::default()
    };
    assert_eq!(
        zero_probes.validate().map_err(|e| e.field),
        Err("half_open_max_probes")
    );
}
