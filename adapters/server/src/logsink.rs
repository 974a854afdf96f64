//! Where log lines go: a buffer in memory that a background thread writes to stderr
//! every [`FLUSH_EVERY`], or at once when it fills.
//!
//! A request thread only appends its line under an uncontended lock; it never waits on
//! the terminal or wakes another thread per line (the cost of a channel to a writer
//! thread, which is what a per-line hand-off pays). This is how `nginx` buffers its
//! access log (`buffer=… flush=…`): a line reaches stderr at most [`FLUSH_EVERY`] after
//! it was written, and when the process stops normally the guard writes what is left.
//! If stderr is slower than the lines coming in, lines beyond [`MAX_PENDING`] bytes are
//! dropped and counted rather than stalling requests or growing memory without bound;
//! the count is reported in the next line written.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// The longest a line waits in memory before it is written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Pending bytes that wake the writer thread before its period is up.
const WAKE_AT: usize = 64 * 1024;
/// Pending bytes beyond which new lines are dropped (and counted) until the writer
/// catches up.
pub const MAX_PENDING: usize = 8 * 1024 * 1024;

struct Shared {
    pending: Mutex<Vec<u8>>,
    wake: Condvar,
    closing: AtomicBool,
    dropped: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        // A panic while appending leaves at worst a partial line: keep logging.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn append(&self, line: &[u8]) {
        let mut pending = self.lock();
        if pending.len() + line.len() > MAX_PENDING {
            drop(pending);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let before = pending.len();
        pending.extend_from_slice(line);
        let crossed = before < WAKE_AT && pending.len() >= WAKE_AT;
        drop(pending);
        if crossed {
            self.wake.notify_one();
        }
    }
}

/// The [`MakeWriter`] handed to the log formatter; cheap to clone.
#[derive(Clone)]
pub struct LogSink {
    shared: Arc<Shared>,
}

/// Writes what is pending when dropped and stops the writer thread.
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A sink writing to `out` from a thread of its own, and the guard that drains it.
pub fn spawn<W: Write + Send + 'static>(out: W) -> io::Result<(LogSink, LogGuard)> {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Vec::with_capacity(WAKE_AT * 2)),
        wake: Condvar::new(),
        closing: AtomicBool::new(false),
        dropped: AtomicU64::new(0),
    });
    let thread = std::thread::Builder::new().name("log-writer".into()).spawn({
        let shared = shared.clone();
        move || write_loop(&shared, out)
    })?;
    Ok((LogSink { shared: shared.clone() }, LogGuard { shared, thread: Some(thread) }))
}

fn write_loop<W: Write>(shared: &Shared, mut out: W) {
    let mut spare = Vec::with_capacity(WAKE_AT * 2);
    loop {
        let closing = {
            let mut pending = shared.lock();
            if pending.len() < WAKE_AT && !shared.closing.load(Ordering::Acquire) {
                pending =
                    shared.wake.wait_timeout(pending, FLUSH_EVERY).unwrap_or_else(PoisonError::into_inner).0;
            }
            std::mem::swap(&mut *pending, &mut spare);
            shared.closing.load(Ordering::Acquire)
        };
        let dropped = shared.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let _ = writeln!(
                out,
                r#"{{"level":"WARN","message":"log lines dropped: the log output is slower than the lines written","dropped":{dropped},"target":"profile_api::logsink"}}"#
            );
        }
        if !spare.is_empty() {
            // Nowhere to report a failing stderr; the lines are gone either way.
            let _ = out.write_all(&spare);
            let _ = out.flush();
            spare.clear();
            // A burst may have grown the buffer: do not keep megabytes around.
            spare.shrink_to(WAKE_AT * 2);
        }
        if closing && shared.lock().is_empty() {
            return;
        }
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One formatted line on its way into the buffer.
pub struct LineWriter<'a> {
    shared: &'a Shared,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.shared.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { shared: &self.shared }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An output the test can read while the writer thread holds it.
    #[derive(Clone, Default)]
    struct Output(Arc<Mutex<Vec<u8>>>);

    impl Write for Output {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn text(out: &Output) -> String {
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn a_line_reaches_the_output_within_the_flush_period() {
        let out = Output::default();
        let (sink, _guard) = spawn(out.clone()).unwrap();
        let t = Instant::now();
        sink.make_writer().write_all(b"one\n").unwrap();
        while !text(&out).contains("one\n") {
            assert!(t.elapsed() < FLUSH_EVERY * 20, "the line never arrived");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn dropping_the_guard_writes_everything_in_order() {
        let out = Output::default();
        let (sink, guard) = spawn(out.clone()).unwrap();
        for i in 0..10_000 {
            sink.make_writer().write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        drop(guard);
        let got = text(&out);
        let lines: Vec<&str> = got.lines().collect();
        assert_eq!(lines.len(), 10_000);
        assert_eq!(lines[0], "line 0");
        assert_eq!(lines[9_999], "line 9999");
    }

    #[test]
    fn a_stalled_output_costs_lines_not_memory_and_says_so() {
        /// Blocks every write until the test opens the gate.
        struct Gate(Arc<(Mutex<bool>, Condvar)>, Output);
        impl Write for Gate {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                let (open, cv) = &*self.0;
                let mut g = open.lock().unwrap();
                while !*g {
                    g = cv.wait(g).unwrap();
                }
                self.1.write(buf)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let out = Output::default();
        let (sink, guard) = spawn(Gate(gate.clone(), out.clone())).unwrap();
        let mut line = vec![b'x'; 1023];
        line.push(b'\n');
        let mut written = 0;
        // Far more than MAX_PENDING while the output is stuck: none of it may block.
        let t = Instant::now();
        for _ in 0..(3 * MAX_PENDING / 1024) {
            sink.make_writer().write_all(&line).unwrap();
            written += 1;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "writers were blocked by the output");
        assert!(sink.shared.lock().len() <= MAX_PENDING);
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        drop(guard);
        let got = text(&out);
        assert!(got.contains("log lines dropped"), "the loss was not reported");
        let kept = got.lines().filter(|l| l.starts_with('x')).count();
        assert!(kept > 0 && kept < written, "kept {kept} of {written}");
    }
}
