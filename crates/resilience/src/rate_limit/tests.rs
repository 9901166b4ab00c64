use super::*;

fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

fn limiter(rps: f64, burst: u32, tpm: Option<u64>, base: Instant) -> RateLimiter {
    RateLimiter::new(
        RateLimitConfig {
            requests_per_second: rps,
            burst_size: burst,
            tokens_per_minute: tpm,
        },
        base,
    )
    .unwrap()
}

#[test]
fn burst_passes_then_rate() {
    let base = Instant::now();
    let gcra = Gcra::new(10.0, Duration::from_secs(1), 3, base);
    for _ in 0..3 {
        assert_eq!(gcra.check(1, base), Ok(()));
    }
    let rejected = gcra.check(1, base).unwrap_err();
    assert_eq!(rejected.wait_from(base), ms(100));

    assert!(gcra.check(1, base + ms(99)).is_err());
    assert_eq!(gcra.check(1, base + ms(100)), Ok(()));
    assert!(gcra.check(1, base + ms(150)).is_err());
    assert_eq!(gcra.check(1, base + ms(200)), Ok(()));
}

#[test]
fn sustained_rate_matches_config() {
    let base = Instant::now();
    let gcra = Gcra::new(50.0, Duration::from_secs(1), 5, base);
    let mut admitted = 0;
    // Offer 1,000 requests per second for 10 seconds.
    for step in 0..10_000u64 {
        if gcra.check(1, base + ms(step)).is_ok() {
            admitted += 1;
        }
    }
    // 50 per second for 10 s, plus the initial burst of 5.
    assert!((500..=506).contains(&admitted), "{admitted}");
}

#[test]
fn remaining_counts_free_capacity() {
    let base = Instant::now();
    let gcra = Gcra::new(10.0, Duration::from_secs(1), 4, base);
    assert_eq!(gcra.remaining(base), 4);
    gcra.check(1, base).unwrap();
    gcra.check(1, base).unwrap();
    assert_eq!(gcra.remaining(base), 2);
    assert_eq!(gcra.remaining(base + ms(100)), 3);
    assert_eq!(gcra.remaining(base + Duration::from_secs(5)), 4);
    assert_eq!(gcra.reset_after(base + ms(50)), ms(150));
}

#[test]
fn cost_above_burst_is_rejected() {
    let base = Instant::now();
    let gcra = Gcra::new(100.0, Duration::from_secs(60), 100, base);
    assert!(gcra.check(101, base).is_err());
    assert_eq!(gcra.check(100, base), Ok(()));
}

#[test]
fn refund_and_charge_move_capacity() {
    let base = Instant::now();
    let gcra = Gcra::new(600.0, Duration::from_secs(60), 600, base);
    gcra.check(500, base).unwrap();
    assert_eq!(gcra.remaining(base), 100);
    gcra.refund(200);
    assert_eq!(gcra.remaining(base), 300);
    gcra.charge(400, base);
    assert_eq!(gcra.remaining(base), 0);
    assert!(gcra.check(1, base).is_err());
}

#[test]
fn token_limit_rejects_and_returns_request() {
    let base = Instant::now();
    let limiter = limiter(100.0, 10, Some(1_000), base);
    assert_eq!(limiter.check(800, base), Ok(()));
    let rejected = limiter.check(300, base).unwrap_err();
    assert_eq!(rejected.limit, Limit::Tokens);
    // 100 tokens are missing at 1,000 per minute: six seconds.
    assert_eq!(rejected.not_until.wait_from(base), Duration::from_secs(6));
    // The rejected request did not use up a request slot.
    assert_eq!(limiter.remaining_requests(base), 9);
}

#[test]
fn reconcile_refunds_and_charges() {
    let base = Instant::now();
    let limiter = limiter(100.0, 10, Some(1_000), base);
    limiter.check(500, base).unwrap();
    assert_eq!(limiter.remaining_tokens(base), Some(500));

    limiter.reconcile(500, 200, base);
    assert_eq!(limiter.remaining_tokens(base), Some(800));

    limiter.check(100, base).unwrap();
    limiter.reconcile(100, 400, base);
    assert_eq!(limiter.remaining_tokens(base), Some(400));
}

#[test]
fn concurrent_checks_admit_exactly_burst() {
    use std::sync::Arc;

    let base = Instant::now();
    let gcra = Arc::new(Gcra::new(1.0, Duration::from_secs(3600), 1_000, base));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let gcra = Arc::clone(&gcra);
            std::thread::spawn(move || (0..1_000).filter(|_| gcra.check(1, base).is_ok()).count())
        })
        .collect();
    let admitted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(admitted, 1_000);
}

#[test]
fn undo_returns_request_and_tokens() {
    let base = Instant::now();
    let limiter = limiter(1.0, 2, Some(600), base);
    limiter.check(100, base).unwrap();
    limiter.undo(100);
    assert_eq!(limiter.remaining_requests(base), 2);
    assert_eq!(limiter.remaining_tokens(base), Some(600));
}

#[test]
fn invalid_settings_are_named() {
    let bad = [
        (
            RateLimitConfig {
                requests_per_second: 0.0,
                burst_size: 1,
                tokens_per_minute: None,
            },
            "requests_per_second",
        ),
        (
            RateLimitConfig {
                requests_per_second: f64::NAN,
                burst_size: 1,
                tokens_per_minute: None,
            },
            "requests_per_second",
        ),
        (
            RateLimitConfig {
                requests_per_second: 1.0,
                burst_size: 0,
                tokens_per_minute: None,
            },
            "burst_size",
        ),
        (
            RateLimitConfig {
                requests_per_second: 1.0,
                burst_size: 1,
                tokens_per_minute: Some(0),
            },
            "tokens_per_minute",
        ),
    ];
    for (config, field) in bad {
        assert_eq!(config.validate().map_err(|e| e.field), Err(field));
    }
}
