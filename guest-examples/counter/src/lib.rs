//! `counter`: reads key `count`, adds 1, writes it back and returns the new
//! value as decimal text. It never knows where its state lives. Written on
//! `edge-sdk`, as `edge-node new` writes a function.
//!
//! An input `hold=MS` makes it wait that many milliseconds between the read
//! and the write (tests use it to hold a call mid-way and race it).

use edge_sdk::{Request, Result, state};
use std::time::Duration;

edge_sdk::handler!(count);

fn count(req: Request) -> Result<String> {
    let current: u64 = match state::get_string("count")? {
        Some(text) => text.trim().parse()?,
        None => 0,
    };
    // Any other input (bytes from a workflow's predecessors, say) is ignored.
    if let Some(ms) = req.text().ok().as_deref().and_then(|t| t.strip_prefix("hold=")) {
        std::thread::sleep(Duration::from_millis(ms.trim().parse()?));
    }
    let next = (current + 1).to_string();
    state::set("count", &next)?;
    Ok(next)
}
