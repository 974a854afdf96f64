//! Answers written together: a connection's first write after it has read a request waits
//! until the worker has run the other tasks that are ready.
//!
//! An HTTP/1 connection is one task, and a cached answer is ready in the same poll that
//! read its request, so without this each connection writes its answer as soon as it has
//! computed it, one `writev` per answer. A client that is faster than the server (a
//! load balancer, a benchmark, any busy peer on another core) has gone back to sleep in
//! between, so every answer also has to wake it: on another core that is an
//! inter-processor interrupt, and under a hypervisor a VM exit, paid by the server's
//! core. Measured with 32 connections on one user's cached profile, the client slept
//! 0.56–1.02 times per request; deferring the write, 0.07 times, and the server's CPU
//! per request fell from 20.9–24.3 µs to 16.2–18.9 µs (BENCHMARKS.md).
//!
//! The deferral is [`tokio::task::yield_now`]'s: the task is woken again once the worker
//! has run out of ready tasks and polled the I/O driver, or at its periodic maintenance,
//! so a deferred answer is never starved by load. With a single connection it costs one
//! more turn of the scheduler per request (≈ 2 µs).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream whose first write after each read that returned data is deferred once.
pub(crate) struct DeferredWrite<T> {
    inner: T,
    /// Data was read since the last write: the next write yields to the ready tasks first.
    defer_next_write: bool,
}

impl<T> DeferredWrite<T> {
    pub(crate) fn new(inner: T) -> Self {
        Self { inner, defer_next_write: false }
    }

    /// `true` when this write is to wait: the task is then woken by the scheduler once the
    /// other ready tasks have run, and the write is tried again.
    fn defer(&mut self, cx: &mut Context<'_>) -> bool {
        if !std::mem::take(&mut self.defer_next_write) {
            return false;
        }
        // `yield_now` hands the waker to the scheduler on its first poll; it is woken
        // whether or not that future is polled again.
        let _ = std::pin::pin!(tokio::task::yield_now()).poll(cx);
        true
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for DeferredWrite<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.defer_next_write = true;
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for DeferredWrite<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.defer(cx) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.defer(cx) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::DeferredWrite;

    type Events = Arc<Mutex<Vec<String>>>;

    /// Runs `serve` for two connections on one thread, each client having sent one byte
    /// first; returns what the tasks recorded, in order, and what each client received.
    fn two_connections<F, Fut>(serve: F) -> (Vec<String>, Vec<Vec<u8>>)
    where
        F: Fn(usize, DeferredWrite<DuplexStream>, Events) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let events = Events::default();
        let received = runtime.block_on(async {
            let mut clients = Vec::new();
            let mut tasks = Vec::new();
            for i in 0..2 {
                let (mut client, server) = tokio::io::duplex(64);
                client.write_all(b"?").await.unwrap();
                clients.push(client);
                tasks.push(tokio::spawn(serve(i, DeferredWrite::new(server), events.clone())));
            }
            for task in tasks {
                task.await.unwrap();
            }
            let mut received = Vec::new();
            for mut client in clients {
                let mut bytes = Vec::new();
                client.read_to_end(&mut bytes).await.unwrap();
                received.push(bytes);
            }
            received
        });
        let events = events.lock().unwrap().clone();
        (events, received)
    }

    /// Two connections whose requests are both waiting: the second request is read before
    /// the first answer is written, and both answers still arrive.
    #[test]
    fn connections_with_requests_waiting_read_them_all_before_answering() {
        let (mut events, received) = two_connections(|i, mut server, events| async move {
            let mut request = [0u8; 1];
            server.read_exact(&mut request).await.unwrap();
            events.lock().unwrap().push(format!("read {i}"));
            server.write_all(b"!").await.unwrap();
            events.lock().unwrap().push(format!("answered {i}"));
        });
        assert_eq!(events[..2], ["read 0", "read 1"], "an answer went out before the other request was read");
        events.sort();
        assert_eq!(events, ["answered 0", "answered 1", "read 0", "read 1"]);
        assert_eq!(received, [b"!", b"!"]);
    }

    /// A write that follows no read (a second write of the same answer, or a server that
    /// speaks first) is not held back.
    #[test]
    fn a_write_without_a_read_before_it_is_not_deferred() {
        let (events, received) = two_connections(|i, mut server, events| async move {
            server.write_all(b"hello").await.unwrap();
            events.lock().unwrap().push(format!("wrote {i}"));
            server.write_all(b"again").await.unwrap();
            events.lock().unwrap().push(format!("wrote again {i}"));
        });
        assert_eq!(events, ["wrote 0", "wrote again 0", "wrote 1", "wrote again 1"]);
        assert_eq!(received, [b"helloagain", b"helloagain"]);
    }
}
