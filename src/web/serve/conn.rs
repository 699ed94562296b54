//! What the server keeps per connection: whether it has a request in flight ([`Activity`]),
//! the body bytes it holds ([`BodyBudget`]), and the deadline for its first byte
//! ([`FirstByteDeadline`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::CONNECTION_BODY_BUDGET;

/// When a connection last had a request, and how many it has in flight: a connection with
/// none in flight and none begun for the header time-out is idle. (hyper closes an idle
/// HTTP/1 connection itself at its next header read, but keeps an HTTP/2 connection open as
/// long as its client answers PINGs.)
pub(super) struct Activity {
    in_flight: AtomicUsize,
    last: Mutex<tokio::time::Instant>,
}

/// One request in flight on a connection; it ends when dropped.
pub(super) struct InFlight(Arc<Activity>);

impl Activity {
    pub(super) fn new() -> Activity {
        Activity { in_flight: AtomicUsize::new(0), last: Mutex::new(tokio::time::Instant::now()) }
    }

    pub(super) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.touch();
        InFlight(self.clone())
    }

    fn touch(&self) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = tokio::time::Instant::now();
    }

    /// When the connection becomes idle if nothing happens meanwhile.
    pub(super) fn idle_deadline(&self, limit: Duration) -> tokio::time::Instant {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) + limit
    }

    pub(super) fn idle_for(&self, limit: Duration) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0 && tokio::time::Instant::now() >= self.idle_deadline(limit)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The body bytes a connection holds in memory, counted against its own budget and the
/// process's. Cloned into every request of the connection.
#[derive(Clone)]
pub(super) struct BodyBudget {
    connection: Arc<Semaphore>,
    process: Arc<Semaphore>,
}

/// Body bytes taken from both budgets; given back when dropped (after the answer).
#[derive(Default)]
pub(super) struct Held {
    connection: Option<OwnedSemaphorePermit>,
    process: Option<OwnedSemaphorePermit>,
    pub(super) bytes: usize,
}

impl BodyBudget {
    pub(super) fn new(process: Arc<Semaphore>) -> BodyBudget {
        BodyBudget { connection: Arc::new(Semaphore::new(CONNECTION_BODY_BUDGET)), process }
    }

    /// Takes `n` more bytes into `held`, waiting while either budget is spent: the
    /// connection's first, so one connection never waits on the process budget while
    /// holding room others could use.
    pub(super) async fn take(&self, held: &mut Held, n: usize) {
        let n32 = u32::try_from(n).unwrap_or(u32::MAX);
        // The semaphores are never closed: acquiring fails only if they were.
        let Ok(connection) = self.connection.clone().acquire_many_owned(n32).await else { return };
        let Ok(process) = self.process.clone().acquire_many_owned(n32).await else { return };
        for (slot, permit) in [(&mut held.connection, connection), (&mut held.process, process)] {
            match slot {
                Some(p) => p.merge(permit),
                None => *slot = Some(permit),
            }
        }
        held.bytes += n;
    }
}

impl Held {
    /// Gives back what is held beyond `keep` bytes.
    pub(super) fn keep_only(&mut self, keep: usize) {
        let extra = self.bytes.saturating_sub(keep);
        for permit in [&mut self.connection, &mut self.process].into_iter().flatten() {
            drop(permit.split(extra));
        }
        self.bytes -= extra;
    }
}

/// A connection that fails its reads when no byte arrived within the deadline from its
/// start: hyper's header time-out starts only once it parses HTTP/1, so a connection that
/// never sends a byte (not even a TLS handshake or a protocol preface) would otherwise wait
/// forever for its version to be known.
pub(super) struct FirstByteDeadline<C> {
    inner: C,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<C> FirstByteDeadline<C> {
    pub(super) fn new(inner: C, limit: Duration) -> Self {
        FirstByteDeadline { inner, deadline: Some(Box::pin(tokio::time::sleep(limit))) }
    }
}

impl<C: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for FirstByteDeadline<C> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match this.deadline.as_mut().map(|d| d.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no request within the header time-out",
                ))),
                _ => Poll::Pending,
            },
            other => other,
        }
    }
}

impl<C: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for FirstByteDeadline<C> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
