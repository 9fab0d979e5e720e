//! The two date formats of Twilio's answers: RFC 2822 on the 2010 API,
//! ISO 8601 on Verify.

use std::time::{SystemTime, UNIX_EPOCH};

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// RFC 2822 in GMT as the 2010 API writes it: `Thu, 24 Aug 2023 05:01:45 +0000`.
pub fn rfc2822(t: SystemTime) -> String {
    let c = Civil::from_unix(unix_seconds(t));
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[c.weekday],
        c.day,
        MONTHS[c.month - 1],
        c.year,
        c.hour,
        c.minute,
        c.second
    )
}

/// ISO 8601 in UTC with seconds precision, as Verify writes it:
/// `2015-07-30T20:00:00Z`.
pub fn iso8601(t: SystemTime) -> String {
    let c = Civil::from_unix(unix_seconds(t));
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// Whole seconds since the Unix epoch, rounded down, saturating far from it.
fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(before) => {
            let d = before.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            let partial = i64::from(d.subsec_nanos() > 0);
            0i64.saturating_sub(secs).saturating_sub(partial)
        }
    }
}

/// A UTC calendar date and time.
struct Civil {
    year: i64,
    /// 1..=12
    month: usize,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// 0 = Sunday
    weekday: usize,
}

impl Civil {
    fn from_unix(secs: i64) -> Civil {
        let days = secs.div_euclid(86_400);
        let of_day = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        Civil {
            year,
            month: month as usize,
            day,
            hour: (of_day / 3600) as u32,
            minute: (of_day / 60 % 60) as u32,
            second: (of_day % 60) as u32,
            // 1970-01-01 was a Thursday.
            weekday: (days.rem_euclid(7) as usize + 4) % 7,
        }
    }
}

/// Proleptic Gregorian date of a day count from 1970-01-01. Works in 400-year
/// eras (146 097 days each) that start on 1 March, so the leap day is the
/// last day of its year and month lengths follow a fixed pattern.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days from 0000-03-01
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097); // [0, 146096]
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153; // [0, 11]
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twilio::responses::test_support::*;
    use regex::Regex;
    use std::time::Duration;

    #[test]
    fn rfc2822_round_trips_a_known_timestamp() {
        assert_eq!(
            rfc2822(at(1_692_853_305)),
            "Thu, 24 Aug 2023 05:01:45 +0000"
        );
        assert_eq!(rfc2822(at(0)), "Thu, 01 Jan 1970 00:00:00 +0000");
        // The Call example in the OpenAPI file.
        assert_eq!(
            rfc2822(at(1_283_286_988)),
            "Tue, 31 Aug 2010 20:36:28 +0000"
        );
        let shape =
            Regex::new(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} \+0000$")
                .unwrap();
        assert!(shape.is_match(&rfc2822(SystemTime::now())));
    }

    #[test]
    fn dates_handle_leap_years_and_year_boundaries() {
        // 2024-02-29 (leap), 2023-03-01 after a non-leap February.
        assert_eq!(
            rfc2822(at(1_709_164_800)),
            "Thu, 29 Feb 2024 00:00:00 +0000"
        );
        assert_eq!(
            rfc2822(at(1_677_628_800)),
            "Wed, 01 Mar 2023 00:00:00 +0000"
        );
        // 2000 is a leap year (divisible by 400), 2100 is not.
        assert_eq!(rfc2822(at(951_782_400)), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(
            rfc2822(at(4_107_542_400)),
            "Mon, 01 Mar 2100 00:00:00 +0000"
        );
        // The last second of a year and the first of the next.
        assert_eq!(
            rfc2822(at(1_704_067_199)),
            "Sun, 31 Dec 2023 23:59:59 +0000"
        );
        assert_eq!(
            rfc2822(at(1_704_067_200)),
            "Mon, 01 Jan 2024 00:00:00 +0000"
        );
        assert_eq!(
            rfc2822(at(1_735_603_200)),
            "Tue, 31 Dec 2024 00:00:00 +0000"
        );
        // Before the epoch, rounding down.
        assert_eq!(
            rfc2822(UNIX_EPOCH - Duration::from_millis(500)),
            "Wed, 31 Dec 1969 23:59:59 +0000"
        );
        assert_eq!(iso8601(at(1_438_286_400)), "2015-07-30T20:00:00Z");
        assert_eq!(iso8601(at(1_709_251_199)), "2024-02-29T23:59:59Z");
    }

    #[test]
    fn dates_far_from_the_epoch_do_not_panic() {
        let far = UNIX_EPOCH + Duration::from_secs(u64::MAX / 2);
        assert!(rfc2822(far).ends_with("+0000"));
        assert!(iso8601(far).ends_with('Z'));
        if let Some(early) = UNIX_EPOCH.checked_sub(Duration::from_secs(1 << 40)) {
            assert!(rfc2822(early).ends_with("+0000"));
        }
    }
}
