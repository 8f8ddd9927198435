//! Timer triggers: a function called at an interval or at the times of a
//! cron schedule, in one session.

use crate::cron::Schedule;
use crate::{Outcome, ParseError, call};
use edge_core::Node;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// When a timer fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum When {
    /// Every so often, counted from the node's start.
    Every(Duration),
    /// At the times of a cron schedule, by the node's clock in UTC.
    Cron(Schedule),
}

/// `WHEN=FUNCTION[@SESSION]`: FUNCTION is called with an empty input in
/// SESSION (default `timer.FUNCTION`) every WHEN (`250ms`, `10s`, `5m`,
/// `1h`, or plain milliseconds) or at the times of the cron expression WHEN
/// (`*/5 * * * *`, `@daily`; see [`crate::cron`]). The next call waits for
/// the previous one; times missed meanwhile are skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerTrigger {
    /// When it fires.
    pub when: When,
    /// The function called.
    pub function: String,
    /// The session it is called in.
    pub session: String,
}

/// An interval: `250ms`, `10s`, `5m`, `1h`, or milliseconds.
fn interval(text: &str) -> Option<Duration> {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (n, unit) = text.split_at(digits);
    let n: u64 = n.parse().ok()?;
    let ms_per = match unit {
        "" | "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    n.checked_mul(ms_per).map(Duration::from_millis)
}

impl FromStr for TimerTrigger {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            ParseError(format!(
                "{s:?}: {why} (expected WHEN=FUNCTION[@SESSION], WHEN an interval \
                 such as 250ms, 10s, 5m, 1h, or a cron expression such as '*/5 * * * *')"
            ))
        };
        let (when, rest) = s.split_once('=').ok_or_else(|| bad("no '='"))?;
        let when = when.trim();
        let when = if when.starts_with('@') || when.contains(char::is_whitespace) {
            When::Cron(
                when.parse()
                    .map_err(|e: crate::cron::CronError| bad(&e.to_string()))?,
            )
        } else {
            let every = interval(when).ok_or_else(|| bad("bad interval"))?;
            if !(Duration::from_millis(10)..=Duration::from_secs(86_400)).contains(&every) {
                return Err(bad("the interval must be 10 ms to a day"));
            }
            When::Every(every)
        };
        let (function, session) = match rest.split_once('@') {
            Some((f, s)) => (f.to_owned(), s.to_owned()),
            None => (rest.to_owned(), format!("timer.{rest}")),
        };
        if !edge_core::registry::valid_name(&function) {
            return Err(bad("invalid function name"));
        }
        if !edge_host_api::valid_session_id(&session) {
            return Err(bad("invalid session id"));
        }
        Ok(TimerTrigger {
            when,
            function,
            session,
        })
    }
}

/// Calls `t`'s function when it is due, for as long as the process runs.
pub fn spawn(node: Arc<Node>, t: TimerTrigger) {
    tokio::spawn(async move {
        match t.when.clone() {
            When::Every(every) => every_interval(&node, &t, every).await,
            When::Cron(schedule) => on_schedule(&node, &t, &schedule).await,
        }
    });
}

async fn every_interval(node: &Node, t: &TimerTrigger, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tick.tick().await;
    loop {
        tick.tick().await;
        fire(node, t).await;
    }
}

async fn on_schedule(node: &Node, t: &TimerTrigger, schedule: &Schedule) {
    let mut clock = CronClock::new(unix_ms());
    loop {
        match clock.next(schedule, unix_ms()) {
            Next::Wait(d) => tokio::time::sleep(d).await,
            Next::Fire(_) => {
                fire(node, t).await;
                clock.fired(unix_ms());
            }
            Next::Missed(at) => {
                tracing::warn!(
                    function = %t.function, schedule = %schedule, missed = at,
                    "timer: the clock jumped past a scheduled time; skipped"
                );
                count(node, "missed");
                clock.fired(unix_ms());
            }
            Next::Never => {
                tracing::warn!(function = %t.function, schedule = %schedule, "timer: no time left to fire");
                return;
            }
        }
    }
}

/// Calls the function once (a busy node skips this time; the next one
/// calls again) and counts how it went.
async fn fire(node: &Node, t: &TimerTrigger) {
    let (outcome, why) = match call(node, &t.function, &t.session, Vec::new()).await {
        Outcome::Done(_) => ("done", None),
        Outcome::Failed(why) => ("failed", Some(why)),
        Outcome::Busy(why) => ("dropped", Some(why)),
    };
    if let Some(why) = why {
        tracing::warn!(function = %t.function, error = %why, "timer call failed");
    }
    count(node, outcome);
}

fn count(node: &Node, outcome: &str) {
    node.metrics()
        .trigger_calls
        .with_label_values(&["timer", outcome])
        .inc();
}

/// Milliseconds since the Unix epoch by the wall clock (0 before it).
fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A scheduled time is still called when the node gets to it this late (a
/// busy node); later than that the clock jumped (set forward, a resumed
/// machine) and the time is skipped.
const GRACE_MS: i64 = 60_000;
/// The wall clock is looked at again at least this often while waiting, so
/// a clock that is set (NTP on a Pi with no battery clock) is noticed.
const LOOK_MS: i64 = 60_000;
/// A clock set back by up to this much waits to catch up (times already
/// fired do not fire twice); set back further, the timer plans from the new
/// time.
const SET_BACK_MS: i64 = 3 * 3_600_000;

/// What a cron timer does next.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Look at the clock again after this long.
    Wait(Duration),
    /// Call the function for this time (Unix seconds).
    Fire(i64),
    /// This time passed too long ago: skip it.
    Missed(i64),
    /// The schedule has no time left (not for a parsed schedule before the
    /// far future).
    Never,
}

/// Where a cron timer is in its schedule, kept apart from the clock so it
/// can be tested with any clock.
#[derive(Debug)]
struct CronClock {
    /// The next time fired is after this one (Unix seconds).
    after: i64,
}

impl CronClock {
    fn new(now_ms: i64) -> Self {
        CronClock {
            after: now_ms.div_euclid(1000),
        }
    }

    fn next(&mut self, schedule: &Schedule, now_ms: i64) -> Next {
        if now_ms < self.after * 1000 - SET_BACK_MS {
            self.after = now_ms.div_euclid(1000);
        }
        let Some(at) = schedule.next_after(self.after) else {
            return Next::Never;
        };
        let late = now_ms - at * 1000;
        if late < 0 {
            // Non-negative and at most LOOK_MS: it fits.
            Next::Wait(Duration::from_millis((-late).min(LOOK_MS) as u64))
        } else if late <= GRACE_MS {
            Next::Fire(at)
        } else {
            Next::Missed(at)
        }
    }

    /// The call for the last time is over at `now_ms`: times that passed
    /// during it are skipped.
    fn fired(&mut self, now_ms: i64) {
        self.after = self.after.max(now_ms.div_euclid(1000));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn timers_parse_and_refuse_nonsense() {
        let t: TimerTrigger = "250=poll".parse().unwrap();
        assert_eq!(t.when, When::Every(Duration::from_millis(250)));
        assert_eq!(t.session, "timer.poll");
        assert_eq!(
            "1000=poll@line-3".parse::<TimerTrigger>().unwrap().session,
            "line-3"
        );
        for (text, every) in [
            ("250ms", 250),
            ("10s", 10_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("24h", 86_400_000),
        ] {
            let t: TimerTrigger = format!("{text}=poll").parse().unwrap();
            assert_eq!(t.when, When::Every(Duration::from_millis(every)), "{text}");
        }
        let t: TimerTrigger = "*/5 * * * *=rollup@line-3".parse().unwrap();
        assert_eq!(t.when, When::Cron("*/5 * * * *".parse().unwrap()));
        assert_eq!(
            (t.function.as_str(), t.session.as_str()),
            ("rollup", "line-3")
        );
        let t: TimerTrigger = "@daily=rollup".parse().unwrap();
        let When::Cron(daily) = t.when else {
            panic!("{t:?}")
        };
        assert_eq!(daily.next_after(0), Some(86_400));
        for (bad, says) in [
            ("poll", "no '='"),
            ("0=poll", "10 ms to a day"),
            ("5=poll", "10 ms to a day"),
            ("5ms=poll", "10 ms to a day"),
            ("25h=poll", "10 ms to a day"),
            ("x=poll", "bad interval"),
            ("10d=poll", "bad interval"),
            ("100=Poll", "invalid function name"),
            ("100=poll@a/b", "invalid session id"),
            ("* * *=poll", "3 fields"),
            ("0 0 30 2 *=poll", "never fire"),
            ("@often=poll", "unknown shorthand"),
        ] {
            let e = bad.parse::<TimerTrigger>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    const S: i64 = 1000;

    #[test]
    fn a_cron_timer_waits_for_its_time_then_fires_once() {
        let every_minute: Schedule = "* * * * *".parse().unwrap();
        let start = (1_800_000_000 + 20) * S + 345; // 20.345 s past a minute
        let mut clock = CronClock::new(start);
        assert_eq!(
            clock.next(&every_minute, start),
            Next::Wait(Duration::from_millis(39_655))
        );
        let minute = 1_800_000_060;
        assert_eq!(clock.next(&every_minute, minute * S), Next::Fire(minute));
        // A late wake-up still fires; the call ends within the second.
        assert_eq!(
            clock.next(&every_minute, minute * S + 900),
            Next::Fire(minute)
        );
        clock.fired(minute * S + 950);
        assert_eq!(
            clock.next(&every_minute, minute * S + 950),
            Next::Wait(Duration::from_millis(59_050))
        );
        // A call that ran past the next time skips it.
        clock.fired((minute + 61) * S);
        assert_eq!(
            clock.next(&every_minute, (minute + 61) * S),
            Next::Wait(Duration::from_secs(59))
        );
    }

    #[test]
    fn long_waits_look_at_the_clock_every_minute() {
        let daily: Schedule = "@daily".parse().unwrap();
        let mut clock = CronClock::new(1_800_000_000 * S);
        assert_eq!(
            clock.next(&daily, 1_800_000_000 * S),
            Next::Wait(Duration::from_secs(60))
        );
    }

    #[test]
    fn a_clock_set_forward_skips_the_times_it_jumped_over() {
        let hourly: Schedule = "@hourly".parse().unwrap();
        // 1,800,000,000 is 08:00:00 UTC on 2027-01-15.
        let eight = 1_800_000_000;
        let mut clock = CronClock::new(eight * S);
        // A Pi with no battery clock boots at its last saved time, then NTP
        // sets the clock a day on: 09:00 yesterday is skipped, once, and the
        // timer plans from now.
        let now = (eight + 86_400 + 600) * S;
        assert_eq!(clock.next(&hourly, now), Next::Missed(eight + 3600));
        clock.fired(now);
        assert_eq!(
            clock.next(&hourly, now),
            Next::Wait(Duration::from_secs(60))
        );
        let nine_today = eight + 86_400 + 3600;
        assert_eq!(clock.next(&hourly, nine_today * S), Next::Fire(nine_today));
    }

    #[test]
    fn a_clock_set_back_does_not_fire_twice_unless_set_back_hours() {
        let every_minute: Schedule = "* * * * *".parse().unwrap();
        let minute = 1_800_000_000 + 60 * 7;
        let mut clock = CronClock::new((minute - 1) * S);
        assert_eq!(clock.next(&every_minute, minute * S), Next::Fire(minute));
        clock.fired(minute * S);
        // Set back ten minutes: the times between fire once, not twice.
        let back = (minute - 600) * S;
        assert_eq!(
            clock.next(&every_minute, back),
            Next::Wait(Duration::from_secs(60))
        );
        assert_eq!(
            clock.next(&every_minute, (minute + 60) * S),
            Next::Fire(minute + 60)
        );
        clock.fired((minute + 60) * S);
        // Set back a day: the timer plans from the new time.
        let day_back = (minute - 86_400) * S;
        assert_eq!(
            clock.next(&every_minute, day_back),
            Next::Wait(Duration::from_secs(60))
        );
        assert_eq!(
            clock.next(&every_minute, day_back + 60 * S),
            Next::Fire(minute - 86_400 + 60)
        );
    }
}
