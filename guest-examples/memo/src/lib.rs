//! `memo`: counts its calls in a global variable and never touches the state
//! API. It returns 1, 2, 3, … only while its instance is pinned (local-state
//! mode); on a fresh instance per call (remote-state mode) it always says 1.

use edge_guest::{Guest, types::Input};
use std::sync::atomic::{AtomicU64, Ordering};

static CALLS: AtomicU64 = AtomicU64::new(0);

struct Memo;

impl Guest for Memo {
    fn handle(_inputs: Vec<Input>) -> Result<Vec<u8>, String> {
        let n = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(n.to_string().into_bytes())
    }
}

edge_guest::export!(Memo with_types_in edge_guest);
