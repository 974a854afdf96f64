//! One JSON object per log line, written straight into the line buffer.
//!
//! The same shape as `tracing-subscriber`'s JSON format with flattened events —
//! `timestamp` (RFC 3339, UTC, microseconds), `level`, `message`, the event's fields,
//! `target` — at a fraction of its cost: no intermediate serde map per event, and the
//! date part of the timestamp is formatted once a second per thread. The access log
//! writes one line per request, so this is on every request's path.

use std::cell::Cell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The event formatter installed by `serve`.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        // The line is built in a buffer of this thread's and handed over in one call:
        // the writer behind `w` is reached through dynamic dispatch on every write.
        LINE.with_borrow_mut(|line| {
            line.clear();
            format_line(line, event, SystemTime::now());
            w.write_str(line)
        })
    }
}

thread_local! {
    static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

fn format_line(line: &mut String, event: &Event<'_>, now: SystemTime) {
    let meta = event.metadata();
    line.push_str("{\"timestamp\":\"");
    write_timestamp(line, now);
    line.push_str("\",\"level\":\"");
    line.push_str(meta.level().as_str());
    line.push('"');
    event.record(&mut Fields { line });
    line.push_str(",\"target\":");
    write_json_str(line, meta.target());
    line.push_str("}\n");
}

/// Writes each field as `,"name":value`.
struct Fields<'a> {
    line: &'a mut String,
}

impl Fields<'_> {
    fn key(&mut self, field: &Field) {
        self.line.push(',');
        write_json_str(self.line, field.name());
        self.line.push(':');
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        write_json_str(self.line, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        self.line.push_str(itoa::Buffer::new().format(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        self.line.push_str(itoa::Buffer::new().format(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.line.push_str(if value { "true" } else { "false" });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        // JSON has no NaN or infinities. Not `Display`: its shortest-digits search went
        // through the formatting machinery on every access-log line (its `latency_ms`).
        if value.is_finite() {
            write_f64(self.line, value);
        } else {
            self.line.push_str("null");
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        self.line.push('"');
        let _ = write!(Escaped(self.line), "{value:?}");
        self.line.push('"');
    }
}

/// A finite `f64` as a JSON number that reads back as exactly `value`. Values of at most
/// three decimals (the access log's `latency_ms` is whole microseconds) are written as
/// integer and fraction digits; anything else through `ryu` (serde_json's float writer).
fn write_f64(line: &mut String, value: f64) {
    let thousandths = (value * 1000.0).round();
    // Below 2^53 every integer is exact, and `thousandths / 1000.0` is the f64 nearest to
    // the decimal written, so equality means the text reads back as `value`.
    if thousandths.abs() < 9_007_199_254_740_992.0 && thousandths / 1000.0 == value {
        let n = thousandths as i64;
        if n < 0 {
            line.push('-');
        }
        let n = n.unsigned_abs();
        line.push_str(itoa::Buffer::new().format(n / 1000));
        let frac = (n % 1000) as u16;
        let digits =
            [b'.', b'0' + (frac / 100) as u8, b'0' + (frac / 10 % 10) as u8, b'0' + (frac % 10) as u8];
        // ASCII digits: always valid UTF-8.
        line.push_str(std::str::from_utf8(&digits).unwrap_or(".000"));
    } else {
        line.push_str(ryu::Buffer::new().format_finite(value));
    }
}

/// Escapes what passes through it as the inside of a JSON string.
struct Escaped<'a>(&'a mut String);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_escaped(self.0, s);
        Ok(())
    }
}

fn write_json_str(line: &mut String, s: &str) {
    line.push('"');
    write_escaped(line, s);
    line.push('"');
}

/// The bytes a JSON string cannot hold as they are (controls, `"`, `\`), and DEL.
static NEEDS_ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t[0x7f] = true;
    t
};

/// Whether any byte of `s` is in [`NEEDS_ESCAPE`]. Every string of every log line is
/// checked, nearly always to find nothing: eight bytes are tested at a time (each test is
/// exact for "is there such a byte in the word").
fn needs_escape(s: &[u8]) -> bool {
    const LO: u64 = u64::from_ne_bytes([0x01; 8]);
    const HI: u64 = u64::from_ne_bytes([0x80; 8]);
    let has_zero = |v: u64| v.wrapping_sub(LO) & !v & HI != 0;
    let mut words = s.chunks_exact(8);
    for w in &mut words {
        let w = u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        let control = w.wrapping_sub(LO * 0x20) & !w & HI != 0;
        if control
            || has_zero(w ^ (LO * u64::from(b'"')))
            || has_zero(w ^ (LO * u64::from(b'\\')))
            || has_zero(w ^ (LO * 0x7f))
        {
            return true;
        }
    }
    words.remainder().iter().any(|&b| NEEDS_ESCAPE[usize::from(b)])
}

fn write_escaped(line: &mut String, s: &str) {
    let needs = |b: u8| NEEDS_ESCAPE[usize::from(b)];
    if !needs_escape(s.as_bytes()) {
        line.push_str(s);
        return;
    }
    let mut plain = 0;
    for (i, b) in s.bytes().enumerate() {
        if !needs(b) {
            continue;
        }
        line.push_str(&s[plain..i]);
        match b {
            b'"' => line.push_str("\\\""),
            b'\\' => line.push_str("\\\\"),
            b'\n' => line.push_str("\\n"),
            b'\r' => line.push_str("\\r"),
            b'\t' => line.push_str("\\t"),
            _ => {
                let _ = write!(line, "\\u{b:04x}");
            }
        }
        plain = i + 1;
    }
    line.push_str(&s[plain..]);
}

thread_local! {
    /// The second last formatted on this thread, and its `YYYY-MM-DDTHH:MM:SS` text.
    static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

/// `2026-12-01T11:19:46.123456Z`: UTC, microseconds.
fn write_timestamp(line: &mut String, now: SystemTime) {
    // A clock before 1970 is written as the epoch rather than failing the line.
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (cached, mut text) = SECOND.get();
    if cached != secs {
        text = civil(secs);
        SECOND.set((secs, text));
    }
    // ASCII digits and separators only.
    line.push_str(std::str::from_utf8(&text).unwrap_or("1970-01-01T00:00:00"));
    let mut frac = *b".000000Z";
    let mut us = since.subsec_micros();
    for d in frac[1..7].iter_mut().rev() {
        *d = b'0' + (us % 10) as u8;
        us /= 10;
    }
    line.push_str(std::str::from_utf8(&frac).unwrap_or(".000000Z"));
}

/// The UTC calendar date and time of a Unix second, `YYYY-MM-DDTHH:MM:SS` (a year past
/// 9999, which needs more digits, is written as the epoch). Once a second per thread.
fn civil(secs: u64) -> [u8; 19] {
    let mut out = *b"1970-01-01T00:00:00";
    let at = i64::try_from(secs).ok().and_then(|s| chrono::DateTime::from_timestamp(s, 0));
    if let Some(at) = at {
        let text = at.format("%Y-%m-%dT%H:%M:%S").to_string();
        if let Ok(bytes) = <[u8; 19]>::try_from(text.as_bytes()) {
            out = bytes;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[test]
    fn civil_dates() {
        let cases = [
            (0, "1970-01-01T00:00:00"),
            (951_782_400, "2000-02-29T00:00:00"),
            (1_709_164_799, "2024-02-28T23:59:59"),
            (1_709_251_199, "2024-02-29T23:59:59"),
            (1_796_125_186, "2026-12-01T11:39:46"),
            (4_102_444_800, "2100-01-01T00:00:00"),
        ];
        for (secs, want) in cases {
            assert_eq!(std::str::from_utf8(&civil(secs)).unwrap(), want, "{secs}");
        }
    }

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(f: impl FnOnce()) -> Vec<serde_json::Value> {
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(JsonLines)
            .with_writer(move || out.clone())
            .with_max_level(tracing::Level::TRACE)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
    }

    #[test]
    fn a_request_line_has_every_field_with_its_type() {
        let got = lines(|| {
            tracing::info!(
                method = "GET",
                route = "/user/profile",
                status = 200u16,
                latency_ms = 0.25,
                request_id = "abc",
                "request"
            );
        });
        let v = &got[0];
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "request");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["status"], 200);
        assert_eq!(v["latency_ms"], 0.25);
        assert_eq!(v["request_id"], "abc");
        assert_eq!(v["target"], module_path!());
        let ts = v["timestamp"].as_str().unwrap();
        assert_eq!(ts.len(), "2026-12-01T11:19:46.123456Z".len(), "{ts}");
        let parsed = chrono::DateTime::parse_from_rfc3339(ts).unwrap();
        let age = chrono::Utc::now().signed_duration_since(parsed);
        assert!(age >= chrono::TimeDelta::zero() && age < chrono::TimeDelta::seconds(5), "{ts}");
    }

    #[test]
    fn hostile_text_stays_inside_its_string() {
        let nasty = "a\"b\\c\nd\re\tf\u{1}g\u{7f}h é 😀";
        let got = lines(|| {
            let e = std::io::Error::other(nasty);
            tracing::warn!(error = %e, debug = ?nasty, plain = nasty, n = -3i64, ok = true, bad = f64::NAN, "m {nasty}");
        });
        let v = &got[0];
        assert_eq!(got.len(), 1, "one event, one line");
        assert_eq!(v["error"], nasty);
        assert_eq!(v["plain"], nasty);
        assert_eq!(v["debug"], format!("{nasty:?}"));
        assert_eq!(v["message"], format!("m {nasty}"));
        assert_eq!(v["n"], -3);
        assert_eq!(v["ok"], true);
        assert!(v["bad"].is_null());
        assert_eq!(v["level"], "WARN");
    }

    #[test]
    fn floats_are_json_numbers_that_read_back_exactly() {
        let values = [0.0, -0.0, 0.001, 0.25, 1.0, 12_345.678, 1e-7, 3e21, f64::MIN_POSITIVE, f64::MAX, -2.5];
        let got = lines(|| {
            for x in values {
                tracing::info!(x, "f");
            }
        });
        assert_eq!(got.len(), values.len());
        for (v, x) in got.iter().zip(values) {
            assert_eq!(v["x"].as_f64(), Some(x), "{v}");
        }
    }

    #[test]
    fn the_word_at_a_time_check_finds_every_byte_the_table_names() {
        for len in 0..24 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut s = vec![b'a'; len];
                    s[at] = b;
                    assert_eq!(
                        needs_escape(&s),
                        NEEDS_ESCAPE[usize::from(b)],
                        "byte {b:#x} at {at} of {len}"
                    );
                    // High bytes beside it (UTF-8) never hide it nor raise a false alarm.
                    let mut hi = vec![0xc3; len];
                    hi[at] = b;
                    assert_eq!(needs_escape(&hi), NEEDS_ESCAPE[usize::from(b)], "byte {b:#x} among 0xc3");
                }
            }
        }
    }

    #[test]
    fn float_text_reads_back_as_the_float() {
        let mut values = vec![
            -0.001,
            0.0005,
            0.1 + 0.2,
            1e-7,
            3e21,
            2e15 + 0.5,
            9.007_199_254_740_993e12,
            f64::MAX,
            -f64::MAX,
        ];
        values.extend((0..20_000).map(|us| f64::from(us) / 1000.0));
        values.extend((0..2_000).map(|i| f64::from(i) * 0.000_37 - 0.3));
        for x in values {
            let mut line = String::new();
            write_f64(&mut line, x);
            assert_eq!(line.parse::<f64>().ok(), Some(x), "{line}");
            // A JSON number (serde_json's default parser is not always correctly rounded
            // at 17 digits, so exactness is judged by the standard library's above).
            assert!(serde_json::from_str::<serde_json::Value>(&line).is_ok_and(|v| v.is_f64()), "{line}");
        }
        let text = |x: f64| {
            let mut line = String::new();
            write_f64(&mut line, x);
            line
        };
        assert_eq!(text(0.25), "0.250");
        assert_eq!(text(12_345.678), "12345.678");
        assert_eq!(text(-2.5), "-2.500");
    }

    #[test]
    fn the_cached_second_moves_on() {
        let mut a = String::new();
        let mut b = String::new();
        let t = UNIX_EPOCH + Duration::from_secs(1_796_125_186) + Duration::from_micros(7);
        write_timestamp(&mut a, t);
        write_timestamp(&mut b, t + Duration::from_secs(1) + Duration::from_micros(987_650));
        assert_eq!(a, "2026-12-01T11:39:46.000007Z");
        assert_eq!(b, "2026-12-01T11:39:47.987657Z");
    }
}
