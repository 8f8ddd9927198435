//! Timer triggers: a function called at a fixed interval, in one session.

use crate::{Outcome, ParseError, call};
use edge_core::Node;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// `MS=FUNCTION[@SESSION]`: FUNCTION is called every MS milliseconds (the
/// next call waits for the previous one; missed ticks are skipped) in
/// SESSION (default `timer.FUNCTION`), with an empty input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerTrigger {
    /// The interval.
    pub every: Duration,
    /// The function called.
    pub function: String,
    /// The session it is called in.
    pub session: String,
}

impl FromStr for TimerTrigger {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| ParseError(format!("{s:?}: {why} (expected MS=FUNCTION[@SESSION])"));
        let (ms, rest) = s.split_once('=').ok_or_else(|| bad("no '='"))?;
        let ms: u64 = ms.parse().map_err(|_| bad("bad interval"))?;
        if !(10..=86_400_000).contains(&ms) {
            return Err(bad("the interval must be 10 ms to a day"));
        }
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
            every: Duration::from_millis(ms),
            function,
            session,
        })
    }
}

/// Calls `t`'s function at its interval for as long as the process runs.
pub fn spawn(node: Arc<Node>, t: TimerTrigger) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(t.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        tick.tick().await;
        loop {
            tick.tick().await;
            // A busy node skips this tick; the next one calls again.
            let (outcome, why) = match call(&node, &t.function, &t.session, Vec::new()).await {
                Outcome::Done(_) => ("done", None),
                Outcome::Failed(why) => ("failed", Some(why)),
                Outcome::Busy(why) => ("dropped", Some(why)),
            };
            if let Some(why) = why {
                tracing::warn!(function = %t.function, error = %why, "timer call failed");
            }
            node.metrics()
                .trigger_calls
                .with_label_values(&["timer", outcome])
                .inc();
        }
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn timers_parse_and_refuse_nonsense() {
        let t: TimerTrigger = "250=poll".parse().unwrap();
        assert_eq!(t.every, Duration::from_millis(250));
        assert_eq!(t.session, "timer.poll");
        assert_eq!(
            "1000=poll@line-3".parse::<TimerTrigger>().unwrap().session,
            "line-3"
        );
        for bad in [
            "poll",
            "0=poll",
            "5=poll",
            "x=poll",
            "100=Poll",
            "100=poll@a/b",
        ] {
            assert!(bad.parse::<TimerTrigger>().is_err(), "{bad}");
        }
    }
}
