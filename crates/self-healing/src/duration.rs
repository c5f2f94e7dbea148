//! Durations as users write them: integer milliseconds (as in the seed: `checkInterval: 10000`)
//! or a string with units (`"10s"`, `"5m"`, `"250ms"`, `"1h30m"`, `"1.5s"`).

use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, Visitor};

/// A duration as [`parse`] reads it, in whole units: `"30m"`, `"1h30m"`, `"45s"`, `"250ms"`.
///
/// ```
/// use std::time::Duration;
/// use self_healing::duration::display;
/// assert_eq!(display(Duration::from_secs(5400)), "1h30m");
/// assert_eq!(display(Duration::from_millis(1500)), "1s500ms");
/// assert_eq!(display(Duration::ZERO), "0s");
/// ```
pub fn display(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = millis;
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

/// Parses `"10s"`, `"5m"`, `"250ms"`, `"1h30m"`, `"1.5s"`, or a bare number of milliseconds.
///
/// ```
/// use std::time::Duration;
/// use self_healing::duration::parse;
/// assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
/// assert_eq!(parse("10000"), Ok(Duration::from_secs(10)));
/// assert!(parse("10 parsecs").is_err());
/// ```
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| {
                format!("`{text}` needs a unit (ms, s, m, h, d) after its last number")
            })?;
        if number_end == 0 {
            return Err(format!(
                "`{text}` is not a duration: expected a number at `{rest}`"
            ));
        }
        let value: f64 = rest[..number_end]
            .parse()
            .map_err(|_| format!("`{}` in `{text}` is not a number", &rest[..number_end]))?;
        let unit_end = rest[number_end..]
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .map_or(rest.len(), |i| number_end + i);
        let seconds = match rest[number_end..unit_end].trim() {
            "ms" => 0.001,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" | "hr" | "hrs" => 3600.0,
            "d" => 86400.0,
            other => {
                return Err(format!(
                    "`{other}` in `{text}` is not a unit: use ms, s, m, h or d"
                ));
            }
        };
        total += Duration::try_from_secs_f64(value * seconds)
            .map_err(|_| format!("`{text}` is too long"))?;
        rest = &rest[unit_end..];
    }
    Ok(total)
}

/// Serde: a duration from integer milliseconds or a string with units.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    struct Millis;

    impl Visitor<'_> for Millis {
        type Value = Duration;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("milliseconds or a duration such as \"10s\"")
        }

        fn visit_u64<E: de::Error>(self, ms: u64) -> Result<Duration, E> {
            Ok(Duration::from_millis(ms))
        }

        fn visit_i64<E: de::Error>(self, ms: i64) -> Result<Duration, E> {
            u64::try_from(ms)
                .map(Duration::from_millis)
                .map_err(|_| E::custom(format!("{ms} ms is negative")))
        }

        fn visit_f64<E: de::Error>(self, ms: f64) -> Result<Duration, E> {
            Duration::try_from_secs_f64(ms / 1000.0)
                .map_err(|_| E::custom(format!("{ms} ms is not a duration")))
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            parse(text).map_err(E::custom)
        }
    }

    deserializer.deserialize_any(Millis)
}

/// A duration as a file writes it, for a configuration's schema: what [`deserialize`] reads,
/// milliseconds (0 or more) or a string that [`parse`] takes. On a `Duration` field:
/// `#[schemars(with = "Written")]`, or `with = "Option<Written>"`.
///
#[derive(Debug)]
pub struct Written;

/// The text [`parse`] takes: digits alone (milliseconds), or numbers each followed by one of
/// its units, blanks around them allowed.
pub const PATTERN: &str =
    r"^\s*(\d+\s*|((\d+(\.\d*)?|\.\d+)\s*(ms|s|secs?|m|mins?|h|hrs?|d)\s*)+)$";

impl JsonSchema for Written {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Milliseconds, or a string with units (ms, s, m, h, d): \"250ms\", \"10s\", \"5m\", \"1h30m\", \"1.5s\".",
            "anyOf": [
                { "type": "number", "minimum": 0 },
                { "type": "string", "pattern": PATTERN }
            ]
        })
    }
}

/// Serde: a duration as [`display`] writes it (`"10s"`, `"1h30m"`), which [`deserialize`] reads
/// back. Where a `Duration` field has a default, also what the schema shows as the default
/// (`#[serde(serialize_with = "…")]`), instead of serde's `{secs, nanos}`.
pub fn serialize<S: serde::Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&display(*duration))
}

/// Serde: an optional duration, as [`deserialize`] (use with `#[serde(default)]`).
pub mod option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    /// Serde: `None` when the value is `null` (or absent, with `#[serde(default)]`), otherwise a
    /// duration as [`deserialize`](super::deserialize) reads it.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(deserialize_with = "super::deserialize")] Duration);
        Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_bare_milliseconds() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse(" 60000 "), Ok(Duration::from_secs(60)));
        assert!(parse("5").is_ok());
        assert!(parse("s").unwrap_err().contains("expected a number"));
        assert!(parse("5 weeks").unwrap_err().contains("not a unit"));
        assert!(parse("").is_err());
    }

    #[test]
    fn serde_takes_numbers_and_strings() {
        #[derive(serde::Deserialize)]
        struct Config {
            #[serde(deserialize_with = "super::deserialize")]
            every: Duration,
            #[serde(default, deserialize_with = "super::option::deserialize")]
            within: Option<Duration>,
        }
        let c: Config = serde_json::from_str(r#"{"every": 10000, "within": "5s"}"#).unwrap();
        assert_eq!(
            (c.every, c.within),
            (Duration::from_secs(10), Some(Duration::from_secs(5)))
        );
        let c: Config = serde_json::from_str(r#"{"every": "1m"}"#).unwrap();
        assert_eq!((c.every, c.within), (Duration::from_secs(60), None));
        assert!(serde_json::from_str::<Config>(r#"{"every": -5}"#).is_err());
    }

    fn pattern() -> regex::Regex {
        // ASCII classes, as JSON Schema's (ECMA-262) regular expressions have them.
        regex::Regex::new(&format!("(?-u){PATTERN}")).unwrap()
    }

    #[test]
    fn the_schema_takes_milliseconds_and_strings_with_units() {
        let schema = schemars::schema_for!(Written);
        let alternatives = schema.get("anyOf").unwrap();
        assert_eq!(
            alternatives[0],
            serde_json::json!({ "type": "number", "minimum": 0 })
        );
        assert_eq!(alternatives[1]["pattern"], PATTERN);
        for written in [
            "10s", "500", "1h30m", "1.5s", " 250 ms ", "2d 3h", "5.m", ".5s",
        ] {
            assert!(pattern().is_match(written), "{written}");
            assert!(parse(written).is_ok(), "{written}");
        }
        for wrong in [
            "ten", "5 weeks", "-5s", "1.2.3s", "s", "", "1s 5", "1 2", ".",
        ] {
            assert!(!pattern().is_match(wrong), "{wrong}");
            assert!(parse(wrong).is_err(), "{wrong}");
        }
    }

    proptest::proptest! {
        /// The schema's pattern takes exactly the strings `parse` does (short ones: the pattern
        /// cannot say that a duration is too long).
        #[test]
        fn the_pattern_is_what_parse_takes(text in "[0-9. smhdinrecs]{0,10}") {
            proptest::prop_assert_eq!(pattern().is_match(&text), parse(&text).is_ok(), "{:?}", text);
        }
    }
}
