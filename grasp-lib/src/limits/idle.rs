//! An idle timeout for readers: a client that stops sending in the middle of a body gets a
//! `TimedOut` error instead of holding its connection (and the git process behind it)
//! forever. Slow but steady senders are fine: every byte read restarts the clock.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The error inside the `TimedOut` I/O error an [`IdleTimeout`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleTimeoutError(pub Duration);

impl fmt::Display for IdleTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the client sent nothing for {} s", self.0.as_secs())
    }
}

impl std::error::Error for IdleTimeoutError {}

/// True when `error` came from an [`IdleTimeout`] (possibly through a decoder that kept
/// the error kind).
pub fn is_idle_timeout(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::TimedOut
}

/// Wraps a reader so that a read waiting longer than `idle` for data fails with
/// [`io::ErrorKind::TimedOut`].
pub struct IdleTimeout<R> {
    inner: R,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<R> fmt::Debug for IdleTimeout<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdleTimeout").field("idle", &self.idle).finish_non_exhaustive()
    }
}

impl<R> IdleTimeout<R> {
    /// `inner`, failing once it has produced nothing for `idle`.
    pub fn new(inner: R, idle: Duration) -> Self {
        Self { inner, idle, deadline: Box::pin(tokio::time::sleep(idle)) }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for IdleTimeout<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.deadline.as_mut().reset(Instant::now() + this.idle);
                Poll::Ready(result)
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, IdleTimeoutError(this.idle))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn steady_data_passes_and_a_stall_times_out() {
        let (mut writer, reader) = tokio::io::duplex(64);
        let mut reader = IdleTimeout::new(reader, Duration::from_secs(5));
        let sender = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                writer.write_all(b"x").await.unwrap();
            }
            // then stall, keeping the pipe open
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        let mut buf = [0u8; 8];
        for _ in 0..3 {
            assert_eq!(reader.read(&mut buf).await.unwrap(), 1);
        }
        let err = reader.read(&mut buf).await.unwrap_err();
        assert!(is_idle_timeout(&err), "{err}");
        assert!(err.to_string().contains("sent nothing for 5 s"), "{err}");
        sender.abort();
    }
}
