use std::time::Duration;

use super::*;

fn limiter(max: u32, queue: u32, timeout_ms: u64) -> Arc<ConcurrencyLimiter> {
    ConcurrencyLimiter::new(ConcurrencyConfig {
        max_concurrent: max,
        queue_size: queue,
        queue_timeout: Duration::from_millis(timeout_ms),
        adaptive: false,
        min_concurrent: None,
    })
    .unwrap()
}

fn adaptive(max: u32, queue: u32) -> Arc<ConcurrencyLimiter> {
    ConcurrencyLimiter::new(ConcurrencyConfig {
        max_concurrent: max,
        queue_size: queue,
        queue_timeout: Duration::from_secs(5),
        adaptive: true,
        min_concurrent: None,
    })
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn full_queue_rejects_at_once() {
    let limiter = limiter(2, 1, 1_000);
    let first = limiter.acquire(0).await.unwrap();
    let _second = limiter.acquire(0).await.unwrap();

    let queued = tokio::spawn({
        let limiter = Arc::clone(&limiter);
        async move { limiter.acquire(0).await.map(|_| ()) }
    });
    tokio::task::yield_now().await;
    assert_eq!(limiter.usage(), (2, 1));
    assert_eq!(limiter.acquire(0).await.unwrap_err(), Rejected::QueueFull);

    drop(first);
    assert_eq!(queued.await.unwrap(), Ok(()));
}

#[tokio::test(start_paused = true)]
async fn queue_serves_priority_then_arrival() {
    let limiter = limiter(1, 10, 10_000);
    let held = limiter.acquire(0).await.unwrap();

    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (name, priority) in [
        ("low-1", 0),
        ("high-1", 2),
        ("low-2", 0),
        ("normal", 1),
        ("high-2", 2),
    ] {
        let limiter = Arc::clone(&limiter);
        let order = Arc::clone(&order);
        tasks.push(tokio::spawn(async move {
            let permit = limiter.acquire(priority).await.unwrap();
            order.lock().push(name);
            tokio::time::sleep(Duration::from_millis(10)).await;
            drop(permit);
        }));
        tokio::task::yield_now().await;
    }
    drop(held);
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        *order.lock(),
        ["high-1", "high-2", "normal", "low-1", "low-2"]
    );
}

#[tokio::test(start_paused = true)]
async fn queue_timeout_rejects() {
    let limiter = limiter(1, 1, 500);
    let _held = limiter.acquire(0).await.unwrap();
    let started = tokio::time::Instant::now();
    assert_eq!(
        limiter.acquire(0).await.unwrap_err(),
        Rejected::QueueTimeout
    );
    assert_eq!(started.elapsed(), Duration::from_millis(500));
    assert_eq!(limiter.usage(), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn cancelled_waiter_leaves_queue() {
    let limiter = limiter(1, 1, 10_000);
    let held = limiter.acquire(0).await.unwrap();

    let waiting = tokio::spawn({
        let limiter = Arc::clone(&limiter);
        async move { limiter.acquire(0).await.map(|_| ()) }
    });
    tokio::task::yield_now().await;
    assert_eq!(limiter.usage(), (1, 1));
    waiting.abort();
    let _ = waiting.await;
    assert_eq!(limiter.usage(), (1, 0));

    // The freed queue place takes a new waiter, and the slot goes to it.
    drop(held);
    assert_eq!(limiter.usage(), (0, 0));
    let _again = limiter.acquire(0).await.unwrap();
    assert_eq!(limiter.usage(), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn slot_handed_to_cancelled_waiter_is_passed_on() {
    let limiter = limiter(1, 2, 10_000);
    let held = limiter.acquire(0).await.unwrap();

    // Poll the first waiter once so it queues, then release the slot to it, then drop
    // it before it can observe the slot.
    let mut first = Box::pin(limiter.acquire(1));
    assert!(tokio::time::timeout(Duration::ZERO, first.as_mut())
        .await
        .is_err());
    let second = tokio::spawn({
        let limiter = Arc::clone(&limiter);
        async move { limiter.acquire(0).await.map(|_| ()) }
    });
    tokio::task::yield_now().await;
    drop(held);
    drop(first);

    assert_eq!(second.await.unwrap(), Ok(()));
    assert_eq!(limiter.usage(), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn dropped_permits_free_slots() {
    let limiter = limiter(3, 0, 1_000);
    let permits: Vec<_> = futures_util::future::join_all((0..3).map(|_| limiter.acquire(0)))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(limiter.acquire(0).await.unwrap_err(), Rejected::QueueFull);
    drop(permits);
    assert_eq!(limiter.usage(), (0, 0));
}

#[test]
fn invalid_settings_are_named() {
    let zero = ConcurrencyConfig {
        max_concurrent: 0,
        queue_size: 0,
        queue_timeout: Duration::from_secs(1),
        adaptive: false,
        min_concurrent: None,
    };
    assert_eq!(zero.validate().map_err(|e| e.field), Err("max_concurrent"));
    let floor_above_ceiling = ConcurrencyConfig {
        max_concurrent: 4,
        min_concurrent: Some(5),
        adaptive: true,
        ..zero.clone()
    };
    let error = floor_above_ceiling.validate().unwrap_err();
    assert_eq!(error.field, "min_concurrent");
    assert!(
        error.reason.contains("between 1 and max_concurrent (4)"),
        "{}",
        error.reason
    );

    let floor_without_adaptive = ConcurrencyConfig {
        max_concurrent: 4,
        min_concurrent: Some(2),
        ..zero
    };
    let error = floor_without_adaptive.validate().unwrap_err();
    assert_eq!(error.field, "min_concurrent");
    assert!(error.reason.contains("adaptive = true"), "{}", error.reason);
}

#[test]
fn static_limit_ignores_reports() {
    let limiter = limiter(10, 0, 1_000);
    let now = std::time::Instant::now();
    for step in 0..100 {
        let at = now + Duration::from_secs(step * 60);
        limiter.record_latency(Duration::from_secs(30), at);
        limiter.record_overload(at);
    }
    assert_eq!(limiter.limit(), 10);
}

#[tokio::test(start_paused = true)]
async fn lowered_limit_drains_then_raised_limit_admits_waiters() {
    let limiter = adaptive(4, 10);
    let mut permits: Vec<_> = Vec::new();
    for _ in 0..4 {
        permits.push(limiter.acquire(0).await.unwrap());
    }
    // Samples ten per latency, so that each latency closes a window.
    let mut clock = std::time::Instant::now();
    let mut report = |latency: Duration, count: u32| {
        for _ in 0..count {
            clock += latency / 10;
            limiter.record_latency(latency, clock);
        }
    };
    report(Duration::from_millis(100), 30);
    assert_eq!(limiter.limit(), 4);

    // The provider slows down: the limit falls below the requests in flight.
    report(Duration::from_millis(400), 20);
    let lowered = limiter.limit();
    assert!(lowered < 4, "{lowered}");

    let waiter = tokio::spawn({
        let limiter = Arc::clone(&limiter);
        async move { limiter.acquire(0).await.map(|_| ()) }
    });
    tokio::task::yield_now().await;
    assert_eq!(limiter.usage(), (4, 1));

    // Returned permits above the limit are not handed on.
    while limiter.usage().0 > lowered {
        permits.pop();
    }
    tokio::task::yield_now().await;
    assert_eq!(limiter.usage(), (lowered, 1));
    assert!(!waiter.is_finished());

    // Fast responses raise the limit again, which lets the waiter in at once.
    report(Duration::from_millis(100), 100);
    assert!(limiter.limit() > lowered);
    assert_eq!(waiter.await.unwrap(), Ok(()));
}
