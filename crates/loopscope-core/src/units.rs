//! Human formatting of durations and serde helpers that store them as integer nanoseconds.

use std::time::Duration;

/// Wall-clock now, in nanoseconds since the Unix epoch (0 for a clock set before 1970).
pub fn unix_now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Formats a duration compactly with three significant digits: `35ns`, `1.23µs`, `20.1ms`, `1.50s`.
pub fn fmt_duration(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    let (v, unit) = if ns < 1e3 {
        (ns, "ns")
    } else if ns < 1e6 {
        (ns / 1e3, "µs")
    } else if ns < 1e9 {
        (ns / 1e6, "ms")
    } else {
        (ns / 1e9, "s")
    };
    if unit == "ns" || v >= 100.0 {
        format!("{v:.0}{unit}")
    } else if v >= 10.0 {
        format!("{v:.1}{unit}")
    } else {
        format!("{v:.2}{unit}")
    }
}

/// Serde helper: a `Duration` as an integer number of nanoseconds.
pub mod duration_ns {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Serializes as nanoseconds (saturating at `u64::MAX`).
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// Deserializes from nanoseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_nanos(u64::deserialize(d)?))
    }
}

/// Serde helper: an `Option<Duration>` as integer nanoseconds or null.
pub mod opt_duration_ns {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Serializes as nanoseconds or null.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration_ns::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    /// Deserializes from nanoseconds or null.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_each_scale() {
        assert_eq!(fmt_duration(Duration::from_nanos(35)), "35ns");
        assert_eq!(fmt_duration(Duration::from_nanos(1_234)), "1.23µs");
        assert_eq!(fmt_duration(Duration::from_micros(20_100)), "20.1ms");
        assert_eq!(fmt_duration(Duration::from_millis(1_500)), "1.50s");
        assert_eq!(fmt_duration(Duration::from_secs(250)), "250s");
    }
}
