//! Go duration strings (`90s`, `1m30s`, `1.5h`, `300ms`), as used by MetalLB's
//! `hold-time`/`holdTime` and other timers.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {0:?} (expected e.g. \"90s\", \"1m30s\", \"300ms\")")]
pub struct DurationError(pub String);

/// Parses a non-negative Go duration. `0` alone is accepted, as in Go.
pub fn parse(s: &str) -> Result<Duration, DurationError> {
    let err = || DurationError(s.to_string());
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.is_empty() || t.starts_with('-') {
        return Err(err());
    }
    let t = t.strip_prefix('+').unwrap_or(t);
    let mut total_ns: u128 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(err()),
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(err());
        }
        let int: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| err())?
        };
        let mut frac_ns: u128 = 0;
        let mut div: u128 = 1;
        for d in frac.chars().take(18) {
            frac_ns = frac_ns * 10 + u128::from(d.to_digit(10).ok_or_else(err)?);
            div *= 10;
        }
        total_ns = total_ns
            .checked_add(int.checked_mul(scale).ok_or_else(err)?)
            .and_then(|n| n.checked_add(frac_ns * scale / div))
            .ok_or_else(err)?;
        rest = tail;
    }
    let secs = u64::try_from(total_ns / 1_000_000_000).map_err(|_| err())?;
    Ok(Duration::new(secs, (total_ns % 1_000_000_000) as u32))
}

/// Formats like Go's `time.Duration.String()` for whole values (`1m30s`, `300ms`).
pub fn format(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    if d.subsec_nanos() != 0 && d.as_secs() == 0 {
        let ns = d.subsec_nanos();
        return if ns.is_multiple_of(1_000_000) {
            format!("{}ms", ns / 1_000_000)
        } else {
            format!("{}ns", ns)
        };
    }
    let mut s = d.as_secs();
    let mut out = String::new();
    if s >= 3600 {
        out += &format!("{}h", s / 3600);
        s %= 3600;
    }
    if s >= 60 || !out.is_empty() {
        out += &format!("{}m", s / 60);
        s %= 60;
    }
    let ms = d.subsec_millis();
    if ms != 0 {
        out += &format!("{s}.{ms:03}s");
    } else {
        out += &format!("{s}s");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        for bad in ["", "90", "-1s", "1x", "s", "1..5s", "1.s5"] {
            assert!(parse(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn formats_back() {
        for s in ["90s", "300ms", "1h0m0s", "1m30s", "0s"] {
            let d = parse(s).unwrap();
            assert_eq!(parse(&format(d)), Ok(d), "{s}");
        }
        assert_eq!(format(Duration::from_secs(90)), "1m30s");
    }
}
