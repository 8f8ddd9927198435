//! `stage`: a generic workflow task, for tests and experiments.
//!
//! - Its output is its first non-parameter input (so an argument of A bytes
//!   stays A bytes along a chain), or `name` when it has none.
//! - Parameter inputs come from the client and look like `name=t3`,
//!   `sleep=15` (milliseconds) or `out=1000` (output that many bytes), joined
//!   by `,`.
//! - Every state it may use (`list-keys`) it updates: with a `name`, it
//!   appends `name;` to the value (a log of who touched it, in order);
//!   without, it increments the 8-byte counter at the start of the value and
//!   keeps its size.

use edge_guest::{Guest, state, types::Input, types::Source};

struct Stage;

#[derive(Default)]
struct Params {
    name: Option<String>,
    sleep_ms: u64,
    out: Option<usize>,
}

fn params(text: &str) -> Option<Params> {
    let mut p = Params::default();
    for part in text.split(',') {
        let (k, v) = part.split_once('=')?;
        match k {
            "name" => p.name = Some(v.to_string()),
            "sleep" => p.sleep_ms = v.parse().ok()?,
            "out" => p.out = Some(v.parse().ok()?),
            _ => return None,
        }
    }
    Some(p)
}

fn err(e: state::StateError) -> String {
    format!("state: {e:?}")
}

impl Guest for Stage {
    fn handle(inputs: Vec<Input>) -> Result<Vec<u8>, String> {
        let mut p = Params::default();
        let mut data: Option<Vec<u8>> = None;
        for input in inputs {
            let parsed = match (&input.source, std::str::from_utf8(&input.data)) {
                (Source::Client, Ok(t)) if t.contains('=') => params(t),
                _ => None,
            };
            match parsed {
                Some(q) => {
                    p.name = q.name.or(p.name);
                    p.sleep_ms = p.sleep_ms.max(q.sleep_ms);
                    p.out = q.out.or(p.out);
                }
                None if data.is_none() => data = Some(input.data),
                None => {}
            }
        }
        if p.sleep_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(p.sleep_ms));
        }
        for key in state::list_keys().map_err(err)? {
            let mut v = state::get(&key).map_err(err)?.unwrap_or_default();
            match &p.name {
                Some(name) => {
                    v.extend_from_slice(name.as_bytes());
                    v.push(b';');
                }
                None => {
                    if v.len() < 8 {
                        v.resize(8, 0);
                    }
                    let mut n = [0u8; 8];
                    n.copy_from_slice(&v[..8]);
                    v[..8].copy_from_slice(&(u64::from_le_bytes(n) + 1).to_le_bytes());
                }
            }
            state::set(&key, &v).map_err(err)?;
        }
        let mut out = data.unwrap_or_else(|| p.name.clone().unwrap_or_default().into_bytes());
        if let Some(n) = p.out {
            out.resize(n, b'o');
        }
        Ok(out)
    }
}

edge_guest::export!(Stage with_types_in edge_guest);
