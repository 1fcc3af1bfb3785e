//! A per-connection kill switch around the TCP stream.
//!
//! russh owns the stream once a session runs, so the only way to cut a connection
//! abruptly (the `drop` fault, and shutdown) without the session sending SSH_MSG_DISCONNECT
//! or channel EOF/close is to make the stream itself fail. After [`Kill::kill`], reads
//! and writes return `ConnectionReset`, the session task ends and drops the socket.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// Shared kill switch of one connection.
#[derive(Default)]
pub struct Kill {
    flag: AtomicBool,
    read_waker: AtomicWaker,
    write_waker: AtomicWaker,
    notify: Notify,
}

impl Kill {
    pub fn kill(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.read_waker.wake();
        self.write_waker.wake();
        self.notify.notify_waiters();
    }

    pub fn is_killed(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Resolves once the connection is killed.
    pub async fn killed(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_killed() {
                return;
            }
            notified.await;
        }
    }
}

/// Stream wrapper honouring a [`Kill`].
pub struct KillStream<S> {
    inner: S,
    kill: Arc<Kill>,
}

impl<S> KillStream<S> {
    pub fn new(inner: S, kill: Arc<Kill>) -> Self {
        KillStream { inner, kill }
    }
}

fn reset() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        "connection cut by simulator",
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for KillStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.kill.read_waker.register(cx.waker());
        if self.kill.is_killed() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for KillStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.kill.write_waker.register(cx.waker());
        if self.kill.is_killed() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.kill.write_waker.register(cx.waker());
        if self.kill.is_killed() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.kill.is_killed() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
