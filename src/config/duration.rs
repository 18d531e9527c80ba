//! Istio durations as VirtualServices write them (`timeout: 1.5s`,
//! `perTryTimeout: 500ms`): a sequence of decimal numbers each with a unit, as Go's
//! `time.ParseDuration` accepts and protobuf's JSON `"1.5s"` form. Read once at load;
//! the route table holds `Duration`s.

use std::time::Duration;

/// Longest duration text accepted; real values are a handful of characters.
pub(crate) const MAX_DURATION_LEN: usize = 64;

/// The longest duration accepted, in nanoseconds: Go's, `i64::MAX`.
const MAX_NANOS: u128 = i64::MAX as u128;

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DurationError {
    #[error("empty duration; expected a number with a unit like 1s, 500ms, 1.5s, 2m, 1h")]
    Empty,
    #[error("duration {0:?} is longer than {MAX_DURATION_LEN} characters")]
    TooLong(String),
    #[error(
        "invalid duration {0:?}; expected numbers with units h, m, s, ms, us, ns, like 1s, 500ms, 1.5s, 2m, 1h"
    )]
    Malformed(String),
    #[error(
        "duration {0:?} has a number without a unit; expected a unit h, m, s, ms, us or ns, like 10s"
    )]
    MissingUnit(String),
    #[error("duration {0:?} is negative; durations must be zero or more")]
    Negative(String),
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

/// Parses an Istio duration: `"1s"`, `"500ms"`, `"1.5s"`, `"2m"`, `"1h"`, `"1m30s"`.
/// Units: `h`, `m`, `s`, `ms`, `us` (or `µs`), `ns`. `"0"` alone means zero.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let text = s.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    if text.len() > MAX_DURATION_LEN {
        return Err(DurationError::TooLong(s.to_owned()));
    }
    if text.starts_with('-') {
        return Err(DurationError::Negative(s.to_owned()));
    }
    let body = text.strip_prefix('+').unwrap_or(text);
    if body == "0" {
        return Ok(Duration::ZERO);
    }
    let malformed = || DurationError::Malformed(s.to_owned());
    let overflow = || DurationError::Overflow(s.to_owned());
    let mut total: u128 = 0; // nanoseconds
    let mut rest = body;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(num_len);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(malformed());
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            "us" | "µs" | "μs" => 1_000,
            "ns" => 1,
            "" => return Err(DurationError::MissingUnit(s.to_owned())),
            _ => return Err(malformed()),
        };
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| overflow())?
        };
        let mut nanos = int.checked_mul(unit_nanos).ok_or_else(overflow)?;
        // Fractional digits beyond nanosecond precision are dropped.
        let mut scale = unit_nanos;
        for digit in frac_part.bytes().take(20) {
            scale /= 10;
            nanos = nanos
                .checked_add(u128::from(digit - b'0') * scale)
                .ok_or_else(overflow)?;
        }
        total = total.checked_add(nanos).ok_or_else(overflow)?;
        rest = next;
    }
    // Go's `time.ParseDuration` (what Istio validates with) holds nanoseconds in an
    // int64: about 292 years at most. Longer would also overflow the deadline a shard
    // computes from it.
    if total > MAX_NANOS {
        return Err(overflow());
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| overflow())?;
    // The remainder is below 10^9 and always fits.
    let sub = u32::try_from(total % 1_000_000_000).map_err(|_| overflow())?;
    Ok(Duration::new(secs, sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0.25s"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration(" 3s "), Ok(Duration::from_secs(3)));
    }

    #[test]
    fn rejected_durations_say_why() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(
            parse_duration("10").unwrap_err().to_string(),
            "duration \"10\" has a number without a unit; expected a unit h, m, s, ms, us or ns, like 10s"
        );
        assert_eq!(
            parse_duration("1d").unwrap_err().to_string(),
            "invalid duration \"1d\"; expected numbers with units h, m, s, ms, us, ns, like 1s, 500ms, 1.5s, 2m, 1h"
        );
        assert_eq!(
            parse_duration("-1s"),
            Err(DurationError::Negative("-1s".into()))
        );
        assert_eq!(
            parse_duration("1..5s"),
            Err(DurationError::Malformed("1..5s".into()))
        );
        assert_eq!(
            parse_duration("s"),
            Err(DurationError::Malformed("s".into()))
        );
        assert_eq!(
            parse_duration("1s2"),
            Err(DurationError::MissingUnit("1s2".into()))
        );
        assert!(matches!(
            parse_duration("99999999999999999999999999h"),
            Err(DurationError::Overflow(_))
        ));
        // Go's bound: 2562047h47m16.854775807s is the longest.
        assert!(parse_duration("2562047h").is_ok());
        assert!(matches!(
            parse_duration("2562048h"),
            Err(DurationError::Overflow(_))
        ));
        assert!(matches!(
            parse_duration("9999999999999999999s"),
            Err(DurationError::Overflow(_))
        ));
        let long = "1".repeat(MAX_DURATION_LEN + 1) + "s";
        assert!(matches!(
            parse_duration(&long),
            Err(DurationError::TooLong(_))
        ));
    }

    #[test]
    fn every_prefix_of_a_valid_duration_is_handled() {
        let full = "1h2m3.5s4ms";
        for cut in 0..=full.len() {
            // Must not panic; the full text must parse.
            let _ = parse_duration(&full[..cut]);
        }
        assert_eq!(
            parse_duration(full),
            Ok(Duration::from_millis(3_600_000 + 120_000 + 3_500 + 4))
        );
    }
}
