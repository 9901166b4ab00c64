//! Costs of the checks that sit on every request: the clock, rate limiter, circuit
//! breaker admission and concurrency slots, alone and with a second thread contending,
//! with `governor`'s direct limiter measured in the same run as the reference. Run with
//! `cargo bench -p adpa-resilience`.

use std::future::Future;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use adpa_resilience::circuit_breaker::Outcome;
use adpa_resilience::clock::{self, Ticks};
use adpa_resilience::concurrency::{ConcurrencyConfig, ConcurrencyLimiter};
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
    // The gateway reads the time-stamp counter clock, as governor does.
    group.bench_function("adpa gcra", |b| {
        b.iter(|| black_box(ours.check(1, Ticks::now())))
    });
    group.bench_function("adpa gcra, std Instant::now", |b| {
        b.iter(|| black_box(ours.check(1, Instant::now())))
    });

    // The same check with the clock read outside the loop: the algorithm alone. The
    // gateway reads the clock once per request for several checks.
    let now = Ticks::now();
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
            let _ = shared.check(1, Ticks::now());
        }
    });
    group.bench_function("adpa gcra, 2 threads", |b| {
        b.iter(|| black_box(shared.check(1, Ticks::now())))
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

fn clocks(c: &mut Criterion) {
    let mut group = c.benchmark_group("clock read");
    group.bench_function("std Instant::now", |b| b.iter(|| black_box(Instant::now())));
    group.bench_function("adpa Ticks::now", |b| b.iter(|| black_box(Ticks::now())));
    group.bench_function("adpa clock::now", |b| b.iter(|| black_box(clock::now())));
    group.finish();
}

fn breaker(c: &mut Criterion) {
    let mut group = c.benchmark_group("breaker admission");
    let breaker = CircuitBreaker::new(CircuitBreakerConfig::default()).unwrap();
    group.bench_function("closed, acquire and record", |b| {
        b.iter(|| {
            let now = clock::now();
            if let Ok(permit) = breaker.try_acquire(now) {
                black_box(breaker.record(permit, Outcome::Success, now));
            }
        })
    });

    let shared = Arc::new(CircuitBreaker::new(CircuitBreakerConfig::default()).unwrap());
    let contender = contend({
        let shared = Arc::clone(&shared);
        move || {
            let now = clock::now();
            if let Ok(permit) = shared.try_acquire(now) {
                shared.record(permit, Outcome::Success, now);
            }
        }
    });
    group.bench_function("closed, 2 threads", |b| {
        b.iter(|| {
            let now = clock::now();
            if let Ok(permit) = shared.try_acquire(now) {
                black_box(shared.record(permit, Outcome::Success, now));
            }
        })
    });
    contender.stop();
    group.finish();
}

/// Takes a permit on the fast path, where a slot is free, and returns it at once. The
/// future is polled by hand: it completes on its first poll, and a runtime's `block_on`
/// would cost more than the acquisition itself.
fn acquire_release(limiter: &Arc<ConcurrencyLimiter>) {
    let mut acquire = pin!(limiter.acquire(1));
    let mut context = Context::from_waker(Waker::noop());
    match acquire.as_mut().poll(&mut context) {
        Poll::Ready(Ok(permit)) => drop(black_box(permit)),
        Poll::Ready(Err(rejected)) => panic!("no slot free: {rejected:?}"),
        Poll::Pending => panic!("acquisition waited although slots were free"),
    }
}

fn concurrency(c: &mut Criterion) {
    let mut group = c.benchmark_group("concurrency acquire and release");
    let config = ConcurrencyConfig {
        max_concurrent: 1_000,
        queue_size: 100,
        queue_timeout: Duration::from_secs(5),
        adaptive: false,
        min_concurrent: None,
    };
    let limiter = ConcurrencyLimiter::new(config.clone()).unwrap();
    group.bench_function("free slot", |b| b.iter(|| acquire_release(&limiter)));

    let shared = ConcurrencyLimiter::new(config).unwrap();
    let contender = contend({
        let shared = Arc::clone(&shared);
        move || acquire_release(&shared)
    });
    group.bench_function("free slot, 2 threads", |b| {
        b.iter(|| acquire_release(&shared))
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

criterion_group!(benches, clocks, limiters, breaker, concurrency);
criterion_main!(benches);
