//! Cron schedules: the times a timer fires, as `cron` reads them, in UTC.
//!
//! `MIN HOUR DAY MONTH WEEKDAY`, or six fields with the seconds first, or a
//! shorthand (`@hourly`, `@daily`/`@midnight`, `@weekly`, `@monthly`,
//! `@yearly`/`@annually`). A field is `*`, a number, a range `A-B`, any of
//! these with a step (`*/15`, `8-18/2`, `5/10` = 5 to the end by 10), or a
//! comma list of them. Months and weekdays take names (`jan`, `mon`); weekday
//! 0 and 7 are Sunday. As in cron, when both the day of the month and the
//! weekday are restricted a day matching either one fires.
//!
//! ```
//! use edge_triggers::cron::Schedule;
//! let s: Schedule = "30 6 * * mon-fri".parse().unwrap();
//! // Thursday 1970-01-01 00:00 UTC → that day at 06:30.
//! assert_eq!(s.next_after(0), Some(6 * 3600 + 30 * 60));
//! ```

use std::fmt;
use std::str::FromStr;

/// A parsed cron expression.
#[derive(Clone, PartialEq, Eq)]
pub struct Schedule {
    text: String,
    seconds: u64,
    minutes: u64,
    hours: u64,
    /// Bits 1..=31.
    days: u64,
    /// Bits 1..=12.
    months: u64,
    /// Bits 0..=6, Sunday is 0.
    weekdays: u64,
    /// The day-of-month field started with `*`.
    any_day: bool,
    /// The weekday field started with `*`.
    any_weekday: bool,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?})", self.text)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A cron expression that does not parse, or that never fires.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cron {text:?}: {why}")]
pub struct CronError {
    text: String,
    why: String,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// One field's bounds and names.
struct Field {
    what: &'static str,
    low: u32,
    high: u32,
    names: &'static [&'static str],
    /// The first name's number.
    first_name: u32,
}

const SECOND: Field = Field::numbers("second", 0, 59);
const MINUTE: Field = Field::numbers("minute", 0, 59);
const HOUR: Field = Field::numbers("hour", 0, 23);
const DAY: Field = Field::numbers("day of month", 1, 31);
const MONTH: Field = Field {
    what: "month",
    low: 1,
    high: 12,
    names: &MONTHS,
    first_name: 1,
};
// 7 is read as Sunday after parsing.
const WEEKDAY: Field = Field {
    what: "weekday",
    low: 0,
    high: 7,
    names: &WEEKDAYS,
    first_name: 0,
};

impl Field {
    const fn numbers(what: &'static str, low: u32, high: u32) -> Field {
        Field {
            what,
            low,
            high,
            names: &[],
            first_name: 0,
        }
    }

    fn value(&self, text: &str) -> Result<u32, String> {
        let lower = text.to_ascii_lowercase();
        let n = match self.names.iter().position(|name| *name == lower) {
            // Names are at most twelve: the index fits.
            Some(i) => self.first_name + i as u32,
            None => text
                .parse::<u32>()
                .map_err(|_| format!("{:?} is not a {}", text, self.what))?,
        };
        if !(self.low..=self.high).contains(&n) {
            return Err(format!(
                "{} {n} is outside {}-{}",
                self.what, self.low, self.high
            ));
        }
        Ok(n)
    }

    /// The set of values `text` names, as bits.
    fn parse(&self, text: &str) -> Result<u64, String> {
        let mut bits = 0u64;
        for item in text.split(',') {
            let (range, step) = match item.split_once('/') {
                Some((range, step)) => {
                    let step: u32 = step
                        .parse()
                        .ok()
                        .filter(|s| (1..=self.high).contains(s))
                        .ok_or_else(|| format!("bad step {step:?} in the {} field", self.what))?;
                    (range, Some(step))
                }
                None => (item, None),
            };
            let (from, to) = if range == "*" {
                (self.low, self.high)
            } else if let Some((a, b)) = range.split_once('-') {
                let (a, b) = (self.value(a)?, self.value(b)?);
                if a > b {
                    return Err(format!("{} range {range:?} runs backwards", self.what));
                }
                (a, b)
            } else if range.is_empty() {
                return Err(format!("an empty item in the {} field", self.what));
            } else {
                let a = self.value(range)?;
                // `5/10` runs from 5 to the end; a bare `5` is just 5.
                (a, if step.is_some() { self.high } else { a })
            };
            let mut n = from;
            while n <= to {
                bits |= 1 << n;
                n += step.unwrap_or(1);
            }
        }
        Ok(bits)
    }
}

impl FromStr for Schedule {
    type Err = CronError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let err = |why: String| CronError {
            text: text.to_owned(),
            why,
        };
        let expanded = match text.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => {
                return Err(err(
                    "unknown shorthand (@hourly, @daily, @weekly, @monthly, @yearly)".into(),
                ));
            }
            _ => text,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let (seconds, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                return Err(err(format!(
                    "{n} fields; expected 5 (minute hour day month weekday) or 6 (seconds first)"
                )));
            }
        };
        let mut weekdays = WEEKDAY.parse(rest[4]).map_err(err)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays & !(1 << 7)) | 1;
        }
        let schedule = Schedule {
            text: text.to_owned(),
            seconds: SECOND.parse(seconds).map_err(err)?,
            minutes: MINUTE.parse(rest[0]).map_err(err)?,
            hours: HOUR.parse(rest[1]).map_err(err)?,
            days: DAY.parse(rest[2]).map_err(err)?,
            months: MONTH.parse(rest[3]).map_err(err)?,
            weekdays,
            any_day: rest[2].starts_with('*'),
            any_weekday: rest[4].starts_with('*'),
        };
        if !schedule.can_fire() {
            return Err(err("no month has that day: it would never fire".into()));
        }
        Ok(schedule)
    }
}

fn has(bits: u64, n: u32) -> bool {
    bits & (1 << n) != 0
}

/// Days in `month` of `year` (proleptic Gregorian).
fn month_days(year: i64, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The civil date of a day counted from 1970-01-01 (year, month 1..=12,
/// day 1..=31): the Gregorian calendar cycles every 400 years (146,097
/// days), counted here from a March 1st so the leap day ends the year.
fn civil(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468; // 0000-03-01 → 1970-01-01
    let cycle = shifted.div_euclid(146_097);
    let day_of_cycle = shifted.rem_euclid(146_097);
    let year_of_cycle =
        (day_of_cycle - day_of_cycle / 1460 + day_of_cycle / 36_524 - day_of_cycle / 146_096) / 365;
    let day_of_year =
        day_of_cycle - (365 * year_of_cycle + year_of_cycle / 4 - year_of_cycle / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    // Bounded by the arithmetic above: 1..=31 and 1..=12.
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_cycle + cycle * 400 + i64::from(month <= 2);
    (year, month, day)
}

const DAY_SECS: i64 = 86_400;

/// How many candidate times [`Schedule::next_after`] looks at before giving
/// up: every field skips whole units, so a year costs at most a few hundred.
const MAX_STEPS: usize = 100_000;

impl Schedule {
    /// The first time after `after` (Unix seconds, UTC) this schedule fires.
    /// `None` only past the year 2^40 or so: a parsed schedule can fire.
    pub fn next_after(&self, after: i64) -> Option<i64> {
        let mut t = after.checked_add(1)?;
        for _ in 0..MAX_STEPS {
            let days = t.div_euclid(DAY_SECS);
            let in_day = t.rem_euclid(DAY_SECS);
            let (year, month, day) = civil(days);
            if !has(self.months, month) {
                // The first of the next month.
                let rest_of_month = i64::from(month_days(year, month) - day) + 1;
                t = (days + rest_of_month) * DAY_SECS;
                continue;
            }
            // 1970-01-01 was a Thursday (4). The remainder is 0..=6.
            let weekday = (days + 4).rem_euclid(7) as u32;
            if !self.day_matches(day, weekday) {
                t = (days + 1) * DAY_SECS;
                continue;
            }
            let day_start = days * DAY_SECS;
            // All three are below 60 (24 for hours): they fit.
            let hour = (in_day / 3600) as u32;
            let minute = (in_day % 3600 / 60) as u32;
            let second = (in_day % 60) as u32;
            if !has(self.hours, hour) {
                t = day_start + i64::from(hour + 1) * 3600;
            } else if !has(self.minutes, minute) {
                t = day_start + i64::from(hour) * 3600 + i64::from(minute + 1) * 60;
            } else if !has(self.seconds, second) {
                t += 1;
            } else {
                return Some(t);
            }
        }
        None
    }

    fn day_matches(&self, day: u32, weekday: u32) -> bool {
        let by_day = has(self.days, day);
        let by_weekday = has(self.weekdays, weekday);
        if self.any_day || self.any_weekday {
            by_day && by_weekday
        } else {
            by_day || by_weekday
        }
    }

    /// Whether any date matches: with the weekday restricted (or both
    /// fields `*`) some day of every month does; otherwise a chosen month
    /// must have a chosen day (February has a 29th in leap years).
    fn can_fire(&self) -> bool {
        if !self.any_weekday && self.weekdays != 0 {
            return true;
        }
        (1..=12u32).any(|month| {
            has(self.months, month) && (1..=month_days(2000, month)).any(|d| has(self.days, d))
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Unix seconds of a UTC time, counted the slow way (day by day) so the
    /// tests do not check `civil` against itself.
    fn at(year: i64, month: u32, day: u32, hour: i64, minute: i64, second: i64) -> i64 {
        let mut days = 0i64;
        for y in 1970..year {
            days += (1..=12).map(|m| i64::from(month_days(y, m))).sum::<i64>();
        }
        for m in 1..month {
            days += i64::from(month_days(year, m));
        }
        days += i64::from(day) - 1;
        days * DAY_SECS + hour * 3600 + minute * 60 + second
    }

    fn next(expr: &str, from: i64) -> i64 {
        expr.parse::<Schedule>().unwrap().next_after(from).unwrap()
    }

    #[test]
    fn civil_dates_agree_with_counting_days() {
        let mut days = 0i64;
        for year in 1970..2110 {
            for month in 1..=12 {
                for day in 1..=month_days(year, month) {
                    assert_eq!(civil(days), (year, month, day), "day {days}");
                    days += 1;
                }
            }
        }
        assert_eq!(civil(-1), (1969, 12, 31));
    }

    #[test]
    fn the_next_time_is_the_first_one_strictly_after() {
        let t = at(2026, 12, 3, 20, 41, 17);
        assert_eq!(next("* * * * *", t), at(2026, 12, 3, 20, 42, 0));
        assert_eq!(next("* * * * * *", t), t + 1);
        assert_eq!(next("*/15 * * * *", t), at(2026, 12, 3, 20, 45, 0));
        assert_eq!(next("*/10 * * * * *", t), at(2026, 12, 3, 20, 41, 20));
        assert_eq!(next("0 * * * *", t), at(2026, 12, 3, 21, 0, 0));
        // From a firing time, the next one.
        let on = at(2026, 12, 3, 21, 0, 0);
        assert_eq!(next("0 * * * *", on), at(2026, 12, 3, 22, 0, 0));
        assert_eq!(next("@hourly", on - 1), on);
        assert_eq!(next("@daily", t), at(2026, 12, 4, 0, 0, 0));
        assert_eq!(next("@midnight", t), at(2026, 12, 4, 0, 0, 0));
        assert_eq!(next("@monthly", t), at(2027, 1, 1, 0, 0, 0));
        assert_eq!(next("@yearly", t), at(2027, 1, 1, 0, 0, 0));
        assert_eq!(
            next("@annually", at(2027, 1, 1, 0, 0, 0)),
            at(2028, 1, 1, 0, 0, 0)
        );
        // 2026-12-03 is a Thursday; Sunday is 0 and 7.
        assert_eq!(next("@weekly", t), at(2026, 12, 6, 0, 0, 0));
        assert_eq!(next("0 0 * * 7", t), at(2026, 12, 6, 0, 0, 0));
        assert_eq!(next("0 0 * * SUN", t), at(2026, 12, 6, 0, 0, 0));
    }

    #[test]
    fn ranges_lists_steps_and_names() {
        let t = at(2026, 12, 3, 20, 41, 17); // a Thursday
        // Working hours, every two hours from 8: 8,10,…,18 → tomorrow 08:30.
        assert_eq!(next("30 8-18/2 * * mon-fri", t), at(2026, 12, 4, 8, 30, 0));
        // Friday evening then the weekend is skipped to Monday.
        let friday = at(2026, 12, 4, 19, 0, 0);
        assert_eq!(next("30 8-18/2 * * 1-5", friday), at(2026, 12, 7, 8, 30, 0));
        assert_eq!(next("0 12 * * sat,sun", t), at(2026, 12, 5, 12, 0, 0));
        assert_eq!(next("5/20 * * * *", t), at(2026, 12, 3, 20, 45, 0));
        assert_eq!(
            next("5/20 * * * *", at(2026, 12, 3, 20, 45, 0)),
            at(2026, 12, 3, 21, 5, 0)
        );
        assert_eq!(next("0 0 1 jan,Jul *", t), at(2027, 1, 1, 0, 0, 0));
        assert_eq!(
            next("0 0 1 JAN,jul *", at(2027, 1, 1, 0, 0, 0)),
            at(2027, 7, 1, 0, 0, 0)
        );
        assert_eq!(next("15,45 * * * *", t), at(2026, 12, 3, 20, 45, 0));
        assert_eq!(next("0 0 * feb-mar *", t), at(2027, 2, 1, 0, 0, 0));
    }

    #[test]
    fn day_of_month_and_weekday_match_either_when_both_are_restricted() {
        let t = at(2026, 12, 3, 20, 41, 17); // a Thursday
        // The 13th, or any Friday: Friday the 4th comes first.
        assert_eq!(next("0 0 13 * fri", t), at(2026, 12, 4, 0, 0, 0));
        assert_eq!(
            next("0 0 13 * fri", at(2026, 12, 11, 0, 0, 0)),
            at(2026, 12, 13, 0, 0, 0)
        );
        // A `*` weekday (even stepped) leaves the day of the month alone.
        assert_eq!(next("0 0 13 * *", t), at(2026, 12, 13, 0, 0, 0));
        assert_eq!(next("0 0 13 * */1", t), at(2026, 12, 13, 0, 0, 0));
        // And a `*` day of the month leaves the weekday alone.
        assert_eq!(next("0 0 * * fri", t), at(2026, 12, 4, 0, 0, 0));
    }

    #[test]
    fn months_ends_and_leap_days() {
        // The 31st skips the months without one.
        assert_eq!(
            next("0 0 31 * *", at(2027, 1, 31, 0, 0, 0)),
            at(2027, 3, 31, 0, 0, 0)
        );
        assert_eq!(
            next("0 0 31 * *", at(2027, 5, 31, 0, 0, 0)),
            at(2027, 7, 31, 0, 0, 0)
        );
        // The 29th of February: next leap year; 2100 is not one.
        assert_eq!(
            next("0 0 29 2 *", at(2026, 12, 3, 0, 0, 0)),
            at(2028, 2, 29, 0, 0, 0)
        );
        assert_eq!(
            next("0 0 29 2 *", at(2096, 3, 1, 0, 0, 0)),
            at(2104, 2, 29, 0, 0, 0)
        );
        assert_eq!(
            next("0 0 29 2 *", at(1999, 3, 1, 0, 0, 0)),
            at(2000, 2, 29, 0, 0, 0)
        );
        // The year turns over.
        assert_eq!(
            next("59 23 31 12 *", at(2026, 12, 31, 23, 59, 0)),
            at(2027, 12, 31, 23, 59, 0)
        );
        assert_eq!(
            next("* * * * *", at(2026, 12, 31, 23, 59, 30)),
            at(2027, 1, 1, 0, 0, 0)
        );
    }

    #[test]
    fn nonsense_and_never_are_refused_with_the_reason() {
        for (bad, says) in [
            ("", "0 fields"),
            ("* * * *", "4 fields"),
            ("* * * * * * *", "7 fields"),
            ("60 * * * *", "minute 60 is outside 0-59"),
            ("* 24 * * *", "hour 24"),
            ("* * 0 * *", "day of month 0"),
            ("* * 32 * *", "day of month 32"),
            ("* * * 13 *", "month 13"),
            ("* * * * 8", "weekday 8"),
            ("* * * foo *", "\"foo\" is not a month"),
            ("* * * * funday", "not a weekday"),
            ("*/0 * * * *", "bad step"),
            ("*/x * * * *", "bad step"),
            ("5-1 * * * *", "runs backwards"),
            ("1,,2 * * * *", "empty item"),
            ("-1 * * * *", "\"\" is not a minute"),
            ("@sometimes", "unknown shorthand"),
            ("0 0 30 2 *", "never fire"),
            ("0 0 31 4,6,9,11 *", "never fire"),
        ] {
            let e = bad.parse::<Schedule>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        // Impossible days are fine when a weekday can fire instead.
        assert!("0 0 30 2 mon".parse::<Schedule>().is_ok());
    }
}
