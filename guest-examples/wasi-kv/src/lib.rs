//! `wasi-kv`: a native (`edge:function`) function that keeps its state only
//! through the standard `wasi:keyvalue` interfaces and reads its settings
//! through `wasi:config`, as a component written for another runtime
//! would. Tests drive it with a script: commands separated by `;`, answers
//! joined by `;`.
//!
//! | command | answer |
//! | --- | --- |
//! | `open NAME` | opens bucket NAME for the next commands (`-` for `""`): `ok` |
//! | `incr K N` | the number after adding N |
//! | `get K` | the value, or `<none>` |
//! | `set K V` / `del K` | `ok` |
//! | `exists K` | `true` or `false` |
//! | `list` | every key (all pages), joined by `,` |
//! | `getmany K,K…` | `K=V` or `<none>` per key, joined by `,` |
//! | `setmany K=V,K=V…` / `delmany K,K…` | `ok` |
//! | `fill N PREFIX` | sets N keys `PREFIX00000…`: `ok` |
//! | `config K` | the function's variable K, or `<none>` |
//! | `config-all` | every variable as `K=V`, sorted, joined by `,` |
//! | `fail` | the handler returns `err("asked to fail")` |
//!
//! A key-value error is answered as `err:<error>` and the script goes on.

wit_bindgen::generate!({
    inline: "
        package edge:wasi-kv;
        world wasi-kv {
            import wasi:keyvalue/store@0.2.0-draft;
            import wasi:keyvalue/atomics@0.2.0-draft;
            import wasi:keyvalue/batch@0.2.0-draft;
            import wasi:config/store@0.2.0-rc.1;
            export edge:function/handler@0.1.0;
        }
    ",
    path: "../../wit",
    world: "edge:wasi-kv/wasi-kv",
    generate_all,
});

use edge::function::types::Input;
use exports::edge::function::handler::Guest;
use wasi::keyvalue::{atomics, batch, store};

struct WasiKv;

fn describe(e: store::Error) -> String {
    match e {
        store::Error::NoSuchStore => "err:no-such-store".into(),
        store::Error::AccessDenied => "err:access-denied".into(),
        store::Error::Other(m) => format!("err:other({m})"),
    }
}

fn text(v: Option<Vec<u8>>) -> String {
    v.map_or("<none>".into(), |v| {
        String::from_utf8_lossy(&v).into_owned()
    })
}

/// A `config` command's answer.
fn config(verb: &str, key: &str) -> String {
    use wasi::config::store as config;
    let answer = match verb {
        "config" => config::get(key).map(|v| v.unwrap_or_else(|| "<none>".into())),
        _ => config::get_all().map(|mut all| {
            all.sort();
            let pairs: Vec<String> = all.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
            pairs.join(",")
        }),
    };
    answer.unwrap_or_else(|e| format!("err:{e:?}"))
}

fn run(bucket: &mut Option<store::Bucket>, command: &str) -> Result<String, store::Error> {
    let mut words = command.split_whitespace();
    let verb = words.next().unwrap_or_default();
    let (a, b) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    );
    if verb == "config" || verb == "config-all" {
        return Ok(config(verb, a));
    }
    if verb == "open" {
        *bucket = Some(store::open(if a == "-" { "" } else { a })?);
        return Ok("ok".into());
    }
    let bucket = match bucket {
        Some(b) => b,
        None => bucket.insert(store::open("default")?),
    };
    Ok(match verb {
        "incr" => atomics::increment(bucket, a, b.parse().unwrap_or(1))?.to_string(),
        "get" => text(bucket.get(a)?),
        "set" => bucket.set(a, b.as_bytes()).map(|()| "ok".into())?,
        "del" => bucket.delete(a).map(|()| "ok".into())?,
        "exists" => bucket.exists(a)?.to_string(),
        "list" => {
            let mut keys = Vec::new();
            let mut cursor = None;
            loop {
                let page = bucket.list_keys(cursor)?;
                keys.extend(page.keys);
                match page.cursor {
                    Some(next) => cursor = Some(next),
                    None => break keys.join(","),
                }
            }
        }
        "getmany" => {
            let keys: Vec<String> = a.split(',').map(str::to_owned).collect();
            batch::get_many(bucket, &keys)?
                .into_iter()
                .map(|kv| kv.map_or("<none>".into(), |(k, v)| format!("{k}={}", text(Some(v)))))
                .collect::<Vec<_>>()
                .join(",")
        }
        "setmany" => {
            let pairs: Vec<(String, Vec<u8>)> = a
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.as_bytes().to_vec()))
                .collect();
            batch::set_many(bucket, &pairs).map(|()| "ok".into())?
        }
        "delmany" => {
            let keys: Vec<String> = a.split(',').map(str::to_owned).collect();
            batch::delete_many(bucket, &keys).map(|()| "ok".into())?
        }
        "fill" => {
            for i in 0..a.parse::<u32>().unwrap_or(0) {
                bucket.set(&format!("{b}{i:05}"), b"x")?;
            }
            "ok".into()
        }
        other => format!("unknown command {other:?}"),
    })
}

impl Guest for WasiKv {
    fn handle(inputs: Vec<Input>) -> Result<Vec<u8>, String> {
        let script: Vec<u8> = inputs.into_iter().flat_map(|i| i.data).collect();
        let script = String::from_utf8_lossy(&script);
        let mut bucket = None;
        let mut answers = Vec::new();
        for command in script.split(';').map(str::trim).filter(|c| !c.is_empty()) {
            if command == "fail" {
                return Err("asked to fail".into());
            }
            answers.push(run(&mut bucket, command).unwrap_or_else(describe));
        }
        Ok(answers.join(";").into_bytes())
    }
}

export!(WasiKv);
