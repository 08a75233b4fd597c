//! Property tests on schedule annotations: any text is a schedule list or a clear error, and
//! a schedule's next firing is always later than the time asked about.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;
use tributary_cron::schedule::parse;

/// Cron-shaped text: fields of digits, ranges, steps, lists, names and stars, with descriptors,
/// `CRON_TZ=` prefixes and separators mixed in.
fn cronish() -> impl Strategy<Value = String> {
    let field = prop_oneof![
        Just("*".to_owned()),
        "[0-9]{1,3}",
        "[0-9]{1,2}-[0-9]{1,2}",
        "\\*/[0-9]{1,3}",
        "[0-9]{1,2}(,[0-9]{1,2}){1,3}",
        Just("MON-FRI".to_owned()),
        Just("JAN".to_owned()),
        Just("L".to_owned()),
        Just("?".to_owned()),
        "[ -~]{1,4}",
    ];
    let expr = proptest::collection::vec(field, 1..8).prop_map(|f| f.join(" "));
    let prefix = prop_oneof![
        Just(String::new()),
        Just("CRON_TZ=Europe/Berlin ".to_owned()),
        Just("TZ=Nowhere/City ".to_owned()),
        Just("@every ".to_owned()),
        Just("@hourly".to_owned()),
        Just("@".to_owned()),
    ];
    proptest::collection::vec((prefix, expr), 1..3).prop_map(|parts| {
        parts
            .into_iter()
            .map(|(p, e)| format!("{p}{e}"))
            .collect::<Vec<_>>()
            .join(";")
    })
}

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..4_102_444_800).prop_map(|s| Utc.timestamp_opt(s, 0).unwrap())
}

proptest! {
    #[test]
    fn schedules_parse_or_say_what_is_wrong(text in cronish(), at in instant()) {
        match parse(&text, Tz::UTC) {
            Ok(schedules) => {
                for s in schedules {
                    if let Some(next) = s.next_after(at, at) {
                        prop_assert!(next > at, "{} after {at}: {next}", s.text());
                    }
                }
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn any_text_is_an_answer(text in "\\PC{0,60}") {
        if let Err(e) = parse(&text, Tz::UTC) {
            prop_assert!(!e.to_string().is_empty());
        }
    }
}
