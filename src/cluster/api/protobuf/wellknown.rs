//! The JSON text of `metav1.Time`, `MicroTime` and `Duration`, as Go's apimachinery writes
//! and reads it: RFC 3339 in UTC, and Go's `time.Duration` text (`1h2m3.5s`, `150ms`).

/// `2024-05-01T10:00:00Z`, or with microseconds for a MicroTime.
pub fn format_time(seconds: i64, nanos: i64, micro: bool) -> String {
    let nanos = u32::try_from(nanos.clamp(0, 999_999_999)).unwrap_or(0);
    let Some(t) = chrono::DateTime::from_timestamp(seconds, if micro { nanos } else { 0 }) else {
        return String::new();
    };
    if micro {
        t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    }
}

/// Seconds and nanoseconds of an RFC 3339 time.
pub fn parse_time(text: &str) -> Option<(i64, i32)> {
    let t = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    Some((
        t.timestamp(),
        i32::try_from(t.timestamp_subsec_nanos()).ok()?,
    ))
}

/// `v` in units of `unit` nanoseconds, with the fraction Go prints (trailing zeros cut).
fn fraction(v: u64, unit: u64) -> String {
    let (whole, rest) = (v / unit, v % unit);
    if rest == 0 {
        return whole.to_string();
    }
    let digits = unit.ilog10() as usize;
    let frac = format!("{rest:0digits$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// Go's `time.Duration.String()` of a count of nanoseconds.
pub fn format_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let sign = if ns < 0 { "-" } else { "" };
    let u = ns.unsigned_abs();
    const SECOND: u64 = 1_000_000_000;
    let text = if u < SECOND {
        match u {
            0..1_000 => format!("{u}ns"),
            1_000..1_000_000 => format!("{}µs", fraction(u, 1_000)),
            _ => format!("{}ms", fraction(u, 1_000_000)),
        }
    } else {
        let seconds = fraction(u % (60 * SECOND), SECOND);
        let minutes = u / (60 * SECOND);
        match (minutes / 60, minutes % 60) {
            (0, 0) => format!("{seconds}s"),
            (0, m) => format!("{m}m{seconds}s"),
            (h, m) => format!("{h}h{m}m{seconds}s"),
        }
    };
    format!("{sign}{text}")
}

/// Go's `time.ParseDuration`: `1h30m`, `1.5s`, `-250ms`, `0`.
pub fn parse_duration(text: &str) -> Option<i64> {
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * unit;
    }
    let ns = total.round() as i64;
    Some(if negative { -ns } else { ns })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_and_print_as_go_does() {
        for (text, ns) in [
            ("0s", 0),
            ("1h0m0s", 3_600_000_000_000),
            ("1m30s", 90_000_000_000),
            ("1.5s", 1_500_000_000),
            ("150ms", 150_000_000),
            ("1.5µs", 1_500),
            ("500ns", 500),
            ("-2m3.25s", -123_250_000_000),
        ] {
            assert_eq!(format_duration(ns), text);
            assert_eq!(parse_duration(text), Some(ns), "{text}");
        }
        assert_eq!(parse_duration("90m"), Some(5_400_000_000_000));
        assert_eq!(parse_duration("1d"), None);
    }

    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(format_time(0, 0, false), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_time(1_700_000_000, 123_456_000, true),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(
            parse_time("2023-11-14T23:13:20+01:00"),
            Some((1_700_000_000, 0))
        );
    }
}
