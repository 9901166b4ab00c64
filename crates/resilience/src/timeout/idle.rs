use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use pin_project_lite::pin_project;
use tokio::time::{sleep_until, Instant, Sleep};

/// The error an [`IdleTimeout`] stream yields when its inner stream stayed idle too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no data for {idle:?}")]
pub struct IdleTimeoutError {
    /// The idle limit that passed.
    pub idle: Duration,
}

pin_project! {
    /// A stream that fails when its inner stream yields nothing for `idle`.
    ///
    /// The timer restarts after every item. After the error the stream ends.
    ///
    /// # Cancel safety
    ///
    /// Dropping it drops the inner stream; no item is lost between polls.
    pub struct IdleTimeout<S> {
        #[pin]
        inner: S,
        #[pin]
        timer: Sleep,
        idle: Duration,
        done: bool,
    }
}

impl<S> IdleTimeout<S> {
    /// Wraps `inner`, allowing at most `idle` between items.
    pub fn new(inner: S, idle: Duration) -> Self {
        Self {
            inner,
            timer: sleep_until(Instant::now() + idle),
            idle,
            done: false,
        }
    }

    /// Returns the wrapped stream.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Stream> Stream for IdleTimeout<S> {
    type Item = Result<S::Item, IdleTimeoutError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }

        if let Poll::Ready(item) = this.inner.poll_next(cx) {
            match item {
                Some(item) => {
                    this.timer.as_mut().reset(Instant::now() + *this.idle);
                    return Poll::Ready(Some(Ok(item)));
                }
                None => {
                    *this.done = true;
                    return Poll::Ready(None);
                }
            }
        }

        ready!(this.timer.poll(cx));
        *this.done = true;
        Poll::Ready(Some(Err(IdleTimeoutError { idle: *this.idle })))
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    /// Builds a stream that yields one item after each given delay.
    fn delayed(delays: Vec<u64>) -> impl Stream<Item = u64> {
        futures_util::stream::iter(delays).then(|ms| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            ms
        })
    }

    #[tokio::test(start_paused = true)]
    async fn passes_items_within_idle_limit() {
        let stream = IdleTimeout::new(delayed(vec![400, 400, 400]), Duration::from_millis(500));
        let items: Vec<_> = stream.collect().await;
        assert_eq!(items, vec![Ok(400), Ok(400), Ok(400)]);
    }

    #[tokio::test(start_paused = true)]
    async fn fails_on_idle_gap() {
        let start = Instant::now();
        let stream = IdleTimeout::new(delayed(vec![100, 900, 100]), Duration::from_millis(500));
        let mut stream = std::pin::pin!(stream);
        assert_eq!(stream.next().await, Some(Ok(100)));
        let idle = Duration::from_millis(500);
        assert_eq!(stream.next().await, Some(Err(IdleTimeoutError { idle })));
        assert_eq!(start.elapsed(), Duration::from_millis(600));
        assert_eq!(stream.next().await, None);
    }
}
