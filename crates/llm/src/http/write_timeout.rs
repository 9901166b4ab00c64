use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tower::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connector whose connections fail a write that stays blocked for longer than the
/// write timeout.
///
/// The timer only runs while a write is pending, so an idle pooled connection never
/// times out, and a slow upstream reader is caught.
#[derive(Clone, Debug)]
pub struct WriteTimeoutConnector {
    inner: HttpConnector,
    write_timeout: Duration,
}

impl WriteTimeoutConnector {
    /// Wraps a TCP connector.
    pub fn new(inner: HttpConnector, write_timeout: Duration) -> Self {
        Self {
            inner,
            write_timeout,
        }
    }
}

impl Service<Uri> for WriteTimeoutConnector {
    type Response = WriteTimeoutIo;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<WriteTimeoutIo, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let write_timeout = self.write_timeout;
        Box::pin(async move {
            let io = connecting.await?;
            Ok(WriteTimeoutIo {
                inner: io,
                write_timeout,
                timer: None,
            })
        })
    }
}

/// A TCP connection with a write timeout.
#[derive(Debug)]
pub struct WriteTimeoutIo {
    inner: TokioIo<TcpStream>,
    write_timeout: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl WriteTimeoutIo {
    /// Applies the timer to a write step: a ready step clears it, a pending one starts it
    /// if needed and fails once it fires.
    fn guard<T>(&mut self, cx: &mut Context<'_>, step: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if step.is_ready() {
            self.timer = None;
            return step;
        }
        let write_timeout = self.write_timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(write_timeout)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.timer = None;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("write blocked for {write_timeout:?}"),
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Connection for WriteTimeoutIo {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}

impl Read for WriteTimeoutIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl Write for WriteTimeoutIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let step = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.guard(cx, step)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let step = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.guard(cx, step)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let step = Pin::new(&mut self.inner).poll_flush(cx);
        self.guard(cx, step)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
