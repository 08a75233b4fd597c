//! Schedules from the `schedule` annotation: standard 5-field cron, an optional leading seconds
//! field (6 fields), descriptors (`@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`) and
//! `@every <duration>`; several schedules separated by `;`; a time zone per schedule with a
//! `CRON_TZ=Area/City` prefix, else the function's `com.openfaas.schedule.timezone` annotation,
//! else the connector's default (UTC).

//!
//! The cron connector fires on these schedules; the gateway's dashboard shows the next firings.
//!
//! ```
//! let schedules = tributary_schedule::parse("*/5 * * * *; @every 1m", chrono_tz::UTC).unwrap();
//! let now = chrono::Utc::now();
//! assert!(schedules.iter().all(|s| s.next_after(now, now).is_some()));
//! ```

use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::CronParser;

/// The topic that marks a function as scheduled.
pub const CRON_TOPIC: &str = "cron-function";
/// The annotation holding the schedule(s).
pub const SCHEDULE_ANNOTATION: &str = "schedule";
/// The annotation holding a time zone for all of a function's schedules.
pub const TIMEZONE_ANNOTATION: &str = "com.openfaas.schedule.timezone";

/// Why a schedule cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The annotation is empty.
    #[error("the schedule annotation is empty")]
    Empty,
    /// A cron expression does not parse.
    #[error("invalid cron expression {expr:?}")]
    Cron {
        /// The expression.
        expr: String,
        /// What the parser said.
        #[source]
        source: croner::errors::CronError,
    },
    /// An `@every` duration does not parse or is zero.
    #[error("invalid @every duration {0:?}: use e.g. @every 30s or @every 1h30m")]
    Every(String),
    /// A time zone is unknown.
    #[error("unknown time zone {0:?}: use an IANA name such as Europe/Berlin")]
    TimeZone(String),
}

/// When one schedule fires.
#[derive(Debug, Clone)]
enum Rule {
    Cron(Box<Cron>),
    Every(Duration),
}

/// One parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    rule: Rule,
    tz: Tz,
    text: String,
}

impl Schedule {
    /// The schedule as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The first firing strictly after `after`; `anchor` is when an `@every` schedule started.
    pub fn next_after(&self, after: DateTime<Utc>, anchor: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.rule {
            Rule::Cron(cron) => cron
                .find_next_occurrence(&after.with_timezone(&self.tz), false)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
            Rule::Every(period) => {
                let period = chrono::Duration::from_std(*period).ok()?;
                if after < anchor {
                    return Some(anchor);
                }
                let elapsed = (after - anchor).num_milliseconds();
                let step = period.num_milliseconds().max(1);
                let n = elapsed / step + 1;
                Some(anchor + chrono::Duration::milliseconds(n * step))
            }
        }
    }
}

/// Parses a `schedule` annotation (one or more schedules separated by `;`).
pub fn parse(annotation: &str, default_tz: Tz) -> Result<Vec<Schedule>, ScheduleError> {
    let parts: Vec<&str> = annotation
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        return Err(ScheduleError::Empty);
    }
    parts
        .into_iter()
        .map(|p| parse_one(p, default_tz))
        .collect()
}

fn parse_one(text: &str, default_tz: Tz) -> Result<Schedule, ScheduleError> {
    let (tz, expr) = match text.split_once(char::is_whitespace) {
        Some((head, rest)) if head.starts_with("CRON_TZ=") || head.starts_with("TZ=") => {
            let name = head.split_once('=').map_or("", |(_, v)| v);
            (parse_tz(name)?, rest.trim())
        }
        _ => (default_tz, text),
    };
    let rule = if let Some(d) = expr.strip_prefix("@every") {
        let d = d.trim();
        let period =
            humantime::parse_duration(d).map_err(|_| ScheduleError::Every(d.to_owned()))?;
        if period.is_zero() {
            return Err(ScheduleError::Every(d.to_owned()));
        }
        Rule::Every(period)
    } else {
        let cron = CronParser::new()
            .parse(expr)
            .map_err(|source| ScheduleError::Cron {
                expr: expr.to_owned(),
                source,
            })?;
        Rule::Cron(Box::new(cron))
    };
    Ok(Schedule {
        rule,
        tz,
        text: text.to_owned(),
    })
}

/// Parses an IANA time zone name.
pub fn parse_tz(name: &str) -> Result<Tz, ScheduleError> {
    name.trim()
        .parse::<Tz>()
        .map_err(|_| ScheduleError::TimeZone(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn five_and_six_field_expressions() {
        let t = at("2026-01-01T10:07:30Z");
        let five = &parse("*/15 * * * *", Tz::UTC).expect("parses")[0];
        assert_eq!(five.next_after(t, t), Some(at("2026-01-01T10:15:00Z")));
        let six = &parse("*/10 * * * * *", Tz::UTC).expect("parses")[0];
        assert_eq!(six.next_after(t, t), Some(at("2026-01-01T10:07:40Z")));
    }

    #[test]
    fn descriptors_and_every() {
        let t = at("2026-01-01T10:07:30Z");
        let hourly = &parse("@hourly", Tz::UTC).expect("parses")[0];
        assert_eq!(hourly.next_after(t, t), Some(at("2026-01-01T11:00:00Z")));
        let every = &parse("@every 45s", Tz::UTC).expect("parses")[0];
        assert_eq!(every.next_after(t, t), Some(at("2026-01-01T10:08:15Z")));
        // Later firings stay on the anchor's grid.
        assert_eq!(
            every.next_after(at("2026-01-01T10:09:00Z"), t),
            Some(at("2026-01-01T10:09:45Z"))
        );
    }

    #[test]
    fn several_schedules_and_time_zones() {
        let s = parse("0 9 * * *; CRON_TZ=America/New_York 0 9 * * *", Tz::UTC).expect("parses");
        assert_eq!(s.len(), 2);
        let t = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .expect("time");
        assert_eq!(s[0].next_after(t, t), Some(at("2026-01-01T09:00:00Z")));
        // 09:00 in New York in winter is 14:00 UTC.
        assert_eq!(s[1].next_after(t, t), Some(at("2026-01-01T14:00:00Z")));
        let berlin = parse("0 9 * * *", parse_tz("Europe/Berlin").expect("tz")).expect("parses");
        assert_eq!(berlin[0].next_after(t, t), Some(at("2026-01-01T08:00:00Z")));
    }

    #[test]
    fn bad_schedules_say_why() {
        assert!(matches!(
            parse(" ; ", Tz::UTC).expect_err("empty"),
            ScheduleError::Empty
        ));
        let e = parse("not a cron", Tz::UTC).expect_err("bad");
        assert!(e.to_string().contains("not a cron"), "{e}");
        assert!(parse("61 * * * *", Tz::UTC).is_err());
        assert!(matches!(
            parse("@every soon", Tz::UTC),
            Err(ScheduleError::Every(_))
        ));
        assert!(matches!(
            parse("@every 0s", Tz::UTC),
            Err(ScheduleError::Every(_))
        ));
        assert!(matches!(
            parse("CRON_TZ=Mars/Olympus * * * * *", Tz::UTC),
            Err(ScheduleError::TimeZone(_))
        ));
    }
}
