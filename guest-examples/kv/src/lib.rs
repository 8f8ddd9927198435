//! `kv`: runs a small script of state commands, so tests can drive the state
//! API from inside a guest. Commands are separated by `;`, answers joined by `;`:
//!
//! | command | answer |
//! | --- | --- |
//! | `get K` | the value, or `<none>` |
//! | `set K V` / `del K` | `ok` |
//! | `list` | the keys, joined by `,` |
//! | `fill K N` | sets K to N bytes of `x`: `ok` |
//! | `key N` | sets a key of N bytes: `ok` |
//! | `mode local` / `mode remote` | asks for that mode from the next call: `ok` |
//! | `whoami` | `<session id> <mode>` |
//! | `fail` | the handler returns `err("asked to fail")` |
//! | `trap` | the guest traps |
//!
//! A state error is answered as `err:<error>` and the script goes on: the
//! guest handles it.

use edge_guest::{Guest, concat_inputs, session, state, types::Input, types::Mode};

struct Kv;

fn answer(r: Result<String, state::StateError>) -> String {
    r.unwrap_or_else(|e| match e {
        state::StateError::InvalidKey(n) => format!("err:invalid-key({n})"),
        state::StateError::ValueTooLarge(n) => format!("err:value-too-large({n})"),
        state::StateError::Unavailable(m) => format!("err:unavailable({m})"),
    })
}

fn run(cmd: &str) -> Result<String, String> {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let ok = |_| "ok".to_string();
    Ok(match words.as_slice() {
        ["get", k] => answer(state::get(k).map(|v| v.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_else(|| "<none>".into()))),
        ["set", k, v] => answer(state::set(k, v.as_bytes()).map(ok)),
        ["del", k] => answer(state::delete(k).map(ok)),
        ["list"] => answer(state::list_keys().map(|keys| keys.join(","))),
        ["fill", k, n] => {
            let n: usize = n.parse().map_err(|_| "fill: bad size".to_string())?;
            answer(state::set(k, &vec![b'x'; n]).map(ok))
        }
        ["key", n] => {
            let n: usize = n.parse().map_err(|_| "key: bad size".to_string())?;
            answer(state::set(&"k".repeat(n), b"v").map(ok))
        }
        ["mode", "local"] => {
            session::request_mode(Mode::Local);
            "ok".into()
        }
        ["mode", "remote"] => {
            session::request_mode(Mode::Remote);
            "ok".into()
        }
        ["whoami"] => {
            let mode = match session::current_mode() {
                Mode::Local => "local",
                Mode::Remote => "remote",
            };
            format!("{} {mode}", session::id())
        }
        ["fail"] => return Err("asked to fail".into()),
        ["trap"] => core::arch::wasm32::unreachable(),
        _ => return Err(format!("unknown command {cmd:?}")),
    })
}

impl Guest for Kv {
    fn handle(inputs: Vec<Input>) -> Result<Vec<u8>, String> {
        let script = String::from_utf8(concat_inputs(&inputs)).map_err(|_| "script is not UTF-8".to_string())?;
        let answers = script
            .split(';')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(run)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(answers.join(";").into_bytes())
    }
}

edge_guest::export!(Kv with_types_in edge_guest);
