//! The standard `wasi:keyvalue` interfaces (0.2.0-draft: `store`, `atomics`,
//! `batch`) served from the same session state as `edge:function/state`,
//! with the same semantics: reads see the call's own writes, writes are
//! buffered and committed atomically when the call succeeds, and a call
//! whose reads went stale is run again. So a component written for another
//! runtime's key-value store runs unchanged, and its keys are the session's
//! keys (a native function of the same session reads them).
//!
//! One bucket per session: `open("")` and `open("default")` give it, any
//! other identifier is `no-such-store`. Counters (`increment`) are decimal
//! text, as the native `counter` example and Redis keep them.

use crate::bindings::edge::function::state::{self as native, StateError};
use crate::ctx::StateCtx;
use wasmtime::component::{HasSelf, Linker, Resource};

/// Bindings generated from `wit/deps/keyvalue` for `wasi:keyvalue/imports`.
pub mod bindings {
    #![allow(missing_docs)]
    wasmtime::component::bindgen!({
        world: "imports",
        path: "../../wit/deps/keyvalue",
        imports: { default: async },
        with: { "wasi:keyvalue/store.bucket": super::Bucket },
    });
}

use bindings::wasi::keyvalue::{atomics, batch, store};

/// An open bucket: the calling session's state. It holds nothing; the
/// state lives in the call's [`StateCtx`].
pub struct Bucket;

/// Keys per page of `list-keys`.
const PAGE: usize = 1000;

/// The identifiers `open` accepts.
const BUCKETS: &[&str] = &["", "default"];

type KvResult<T> = Result<T, store::Error>;

fn error(e: StateError) -> store::Error {
    store::Error::Other(match e {
        StateError::InvalidKey(max) => format!("invalid key: 1 to {max} bytes"),
        StateError::ValueTooLarge(max) => format!("value larger than {max} bytes"),
        StateError::Unavailable(why) => format!("state unavailable: {why}"),
    })
}

impl store::Host for StateCtx {
    async fn open(&mut self, identifier: String) -> KvResult<Resource<Bucket>> {
        if !BUCKETS.contains(&identifier.as_str()) {
            return Err(store::Error::NoSuchStore);
        }
        // Every bucket is the session's state: the handle carries no data.
        Ok(Resource::new_own(0))
    }
}

impl store::HostBucket for StateCtx {
    async fn get(&mut self, _: Resource<Bucket>, key: String) -> KvResult<Option<Vec<u8>>> {
        native::Host::get(self, key).await.map_err(error)
    }

    async fn set(&mut self, _: Resource<Bucket>, key: String, value: Vec<u8>) -> KvResult<()> {
        native::Host::set(self, key, value).await.map_err(error)
    }

    async fn delete(&mut self, _: Resource<Bucket>, key: String) -> KvResult<()> {
        native::Host::delete(self, key).await.map_err(error)
    }

    async fn exists(&mut self, _: Resource<Bucket>, key: String) -> KvResult<bool> {
        Ok(native::Host::get(self, key).await.map_err(error)?.is_some())
    }

    async fn list_keys(
        &mut self,
        _: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> KvResult<store::KeyResponse> {
        let keys = native::Host::list_keys(self).await.map_err(error)?;
        let from = usize::try_from(cursor.unwrap_or(0)).unwrap_or(usize::MAX);
        let page: Vec<String> = keys.into_iter().skip(from).take(PAGE + 1).collect();
        let more = page.len() > PAGE;
        let keys: Vec<String> = page.into_iter().take(PAGE).collect();
        let cursor = more.then(|| (from + PAGE) as u64);
        Ok(store::KeyResponse { keys, cursor })
    }

    async fn drop(&mut self, _: Resource<Bucket>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl atomics::Host for StateCtx {
    async fn increment(&mut self, _: Resource<Bucket>, key: String, delta: u64) -> KvResult<u64> {
        let current = match native::Host::get(self, key.clone()).await.map_err(error)? {
            None => 0,
            Some(bytes) => match std::str::from_utf8(&bytes)
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
            {
                Some(n) => n,
                None => {
                    return Err(store::Error::Other(format!(
                        "the value of {key} is not a decimal number"
                    )));
                }
            },
        };
        let Some(next) = current.checked_add(delta) else {
            return Err(store::Error::Other(format!(
                "{key} would overflow: {current} + {delta}"
            )));
        };
        let text = next.to_string().into_bytes();
        native::Host::set(self, key, text).await.map_err(error)?;
        Ok(next)
    }
}

impl batch::Host for StateCtx {
    async fn get_many(
        &mut self,
        _: Resource<Bucket>,
        keys: Vec<String>,
    ) -> KvResult<Vec<Option<(String, Vec<u8>)>>> {
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            let value = native::Host::get(self, key.clone()).await.map_err(error)?;
            found.push(value.map(|v| (key, v)));
        }
        Ok(found)
    }

    async fn set_many(
        &mut self,
        _: Resource<Bucket>,
        pairs: Vec<(String, Vec<u8>)>,
    ) -> KvResult<()> {
        for (key, value) in pairs {
            native::Host::set(self, key, value).await.map_err(error)?;
        }
        Ok(())
    }

    async fn delete_many(&mut self, _: Resource<Bucket>, keys: Vec<String>) -> KvResult<()> {
        for key in keys {
            native::Host::delete(self, key).await.map_err(error)?;
        }
        Ok(())
    }
}

/// Adds `wasi:keyvalue/{store,atomics,batch}@0.2.0-draft` to `linker`,
/// served from the [`StateCtx`] that `get` finds.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut StateCtx,
) -> wasmtime::Result<()> {
    store::add_to_linker::<T, HasSelf<StateCtx>>(linker, get)?;
    atomics::add_to_linker::<T, HasSelf<StateCtx>>(linker, get)?;
    batch::add_to_linker::<T, HasSelf<StateCtx>>(linker, get)?;
    Ok(())
}
