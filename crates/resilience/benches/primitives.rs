//! Costs of the checks that sit on every request: rate limiter, circuit breaker
//! admission, with `governor`'s direct limiter measured in the same run as the
//! reference. Run with `cargo bench -p adpa-resilience`.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use adpa_resilience::circuit_breaker::Outcome;
use adpa_resilience::rate_limit::Gcra;
use adpa_resilience::{CircuitBreaker, CircuitBreakerConfig};
use criterion::{criterion_group, criterion_main, Criterion};
use governor::{Quota, RateLimiter};

/// A rate high enough that no check is rejected, so every iteration does the same work.
const RATE: u32 = 1_000_000_000;

fn limiters(c: &mut Criterion) {
    let mut group = c.benchmark_group("limiter check");
    let base = Instant::now();

    let ours = Gcra::new(
        f64::from(RATE),
        Duration::from_secs(1),
        u64::from(RATE),
        base,
    );
    group.bench_function("adpa gcra", |b| {
        b.iter(|| black_box(ours.check(1, Instant::now())))
    });

    // The same check with the clock read outside the loop: the algorithm alone. The
    // gateway reads the clock once per request for several checks.
    let now = Instant::now();
    group.bench_function("adpa gcra, clock read excluded", |b| {
        b.iter(|| black_box(ours.check(1, black_box(now))))
    });

    let quota = Quota::per_second(NonZeroU32::new(RATE).unwrap());
    let governor = RateLimiter::direct(quota);
    group.bench_function("governor direct", |b| {
        b.iter(|| black_box(governor.check()))
    });

    // Two threads on the same limiter: the measured thread and one that checks in a loop.
    let shared = Arc::new(Gcra::new(
        f64::from(RATE),
        Duration::from_secs(1),
        u64::from(RATE),
        base,
    ));
    let contender = contend({
        let shared = Arc::clone(&shared);
        move || {
            let _ = shared.check(1, Instant::now());
        }
    });
    group.bench_function("adpa gcra, 2 threads", |b| {
        b.iter(|| black_box(shared.check(1, Instant::now())))
    });
    contender.stop();

    let shared_governor = Arc::new(RateLimiter::direct(quota));
    let contender = contend({
        let shared = Arc::clone(&shared_governor);
        move || {
            let _ = shared.check();
        }
    });
    group.bench_function("governor direct, 2 threads", |b| {
        b.iter(|| black_box(shared_governor.check()))
    });
    contender.stop();
    group.finish();
}

fn breaker(c: &mut Criterion) {
    let mut group = c.benchmark_group("breaker admission");
    let breaker = CircuitBreaker::new(CircuitBreakerConfig::default()).unwrap();
    group.bench_function("closed, acquire and record", |b| {
        b.iter(|| {
            let now = Instant::now();
            if let Ok(permit) = breaker.try_acquire(now) {
                black_box(breaker.record(permit, Outcome::Success, now));
            }
        })
    });

    let shared = Arc::new(CircuitBreaker::new(CircuitBreakerConfig::default()).unwrap());
    let contender = contend({
        let shared = Arc::clone(&shared);
        move || {
            let now = Instant::now();
            if let Ok(permit) = shared.try_acquire(now) {
                shared.record(permit, Outcome::Success, now);
            }
        }
    });
    group.bench_function("closed, 2 threads", |b| {
        b.iter(|| {
            let now = Instant::now();
            if let Ok(permit) = shared.try_acquire(now) {
                black_box(shared.record(permit, Outcome::Success, now));
            }
        })
    });
    contender.stop();
    group.finish();
}

/// A thread that runs `work` in a loop until stopped.
struct Contender {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<()>,
}

impl Contender {
    fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.handle.join();
    }
}

fn contend(work: impl Fn() + Send + 'static) -> Contender {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let handle = std::thread::spawn(move || {
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            work();
        }
    });
    Contender { stop, handle }
}

criterion_group!(benches, limiters, breaker);
criterion_main!(benches);
