//! `counter`: reads key `count`, adds 1, writes it back and returns the new
//! value as decimal text. It never knows where its state lives.
//!
//! An input `hold=MS` makes it wait that many milliseconds between the read
//! and the write (tests use it to hold a call mid-way and race it).

use edge_guest::{Guest, concat_inputs, state, types::Input};

struct Counter;

fn err(e: state::StateError) -> String {
    format!("state: {e:?}")
}

/// The `hold=MS` input, if that is what the caller sent.
fn hold(inputs: &[Input]) -> Option<std::time::Duration> {
    let all = concat_inputs(inputs);
    let ms = std::str::from_utf8(&all).ok()?.strip_prefix("hold=")?;
    Some(std::time::Duration::from_millis(ms.trim().parse().ok()?))
}

impl Guest for Counter {
    fn handle(inputs: Vec<Input>) -> Result<Vec<u8>, String> {
        let current = match state::get("count").map_err(err)? {
            Some(bytes) => String::from_utf8(bytes)
                .map_err(|_| "count is not UTF-8".to_string())?
                .trim()
                .parse::<u64>()
                .map_err(|e| format!("count is not a number: {e}"))?,
            None => 0,
        };
        if let Some(wait) = hold(&inputs) {
            std::thread::sleep(wait);
        }
        let next = (current + 1).to_string();
        state::set("count", next.as_bytes()).map_err(err)?;
        Ok(next.into_bytes())
    }
}

edge_guest::export!(Counter with_types_in edge_guest);
