//! `counter`: reads key `count`, adds 1, writes it back and returns the new
//! value as decimal text. It never knows where its state lives.

use edge_guest::{Guest, state, types::Input};

struct Counter;

fn err(e: state::StateError) -> String {
    format!("state: {e:?}")
}

impl Guest for Counter {
    fn handle(_inputs: Vec<Input>) -> Result<Vec<u8>, String> {
        let current = match state::get("count").map_err(err)? {
            Some(bytes) => String::from_utf8(bytes)
                .map_err(|_| "count is not UTF-8".to_string())?
                .trim()
                .parse::<u64>()
                .map_err(|e| format!("count is not a number: {e}"))?,
            None => 0,
        };
        let next = (current + 1).to_string();
        state::set("count", next.as_bytes()).map_err(err)?;
        Ok(next.into_bytes())
    }
}

edge_guest::export!(Counter with_types_in edge_guest);
