//! Write [edge-node](https://github.com/edge-node) functions in Rust.
//!
//! A function is one handler: it gets the call's [`Request`] and returns
//! its output, or an [`Error`] (the caller sees a 422 with the message).
//! [`state`] is the session's key/value state and [`session`] the session
//! itself; the function never knows where the state lives (this node, a
//! remote store, a workflow's carried values) — the same binary runs in all.
//!
//! ```ignore
//! use edge_sdk::{Request, Result, state};
//!
//! edge_sdk::handler!(count);
//!
//! /// Counts the calls of its session.
//! fn count(_req: Request) -> Result<String> {
//!     let n: u64 = match state::get_string("count")? {
//!         Some(text) => text.parse()?,
//!         None => 0,
//!     };
//!     state::set("count", (n + 1).to_string())?;
//!     Ok((n + 1).to_string())
//! }
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2`; the `.wasm`
//! under `target/wasm32-wasip2/release/` is the component to deploy.

/// The bindings generated from `wit/` (the same WIT the node reads).
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "function",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "__export_bindings",
        default_bindings_module: "edge_sdk::bindings",
    });
}

use bindings::edge::function as wit;
pub use wit::types::{Input, Mode, Source};

/// A handler's result: [`Error`] by default.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a call failed: its message is what the caller gets (422).
///
/// Any standard error converts into it with `?`, so it does not implement
/// `std::error::Error` itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    /// An error with `message`.
    pub fn msg(message: impl std::fmt::Display) -> Self {
        Error(message.to_string())
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(e: E) -> Self {
        Error(e.to_string())
    }
}

/// One call: its inputs (one from a client; one per predecessor in a
/// workflow, in order).
#[derive(Debug)]
pub struct Request {
    inputs: Vec<Input>,
}

impl Request {
    /// The inputs, each with where it came from.
    pub fn inputs(&self) -> &[Input] {
        &self.inputs
    }

    /// Every input's bytes, concatenated in order (a client's call: its body).
    pub fn body(&self) -> Vec<u8> {
        self.inputs
            .iter()
            .flat_map(|i| i.data.iter().copied())
            .collect()
    }

    /// [`Request::body`] as UTF-8 text.
    pub fn text(&self) -> Result<String> {
        Ok(String::from_utf8(self.body())?)
    }
}

/// The session's key/value state. Reads see this call's own writes; the
/// writes are committed together when the handler returns `Ok`, and none
/// of them when it returns `Err` or traps.
pub mod state {
    use super::{Error, Result, wit::state};

    fn error(e: state::StateError) -> Error {
        Error::msg(match e {
            state::StateError::InvalidKey(limit) => {
                format!("state: invalid key (empty or over {limit} bytes)")
            }
            state::StateError::ValueTooLarge(limit) => {
                format!("state: value over {limit} bytes")
            }
            state::StateError::Unavailable(why) => format!("state unavailable: {why}"),
        })
    }

    /// The value under `key`, if any.
    pub fn get(key: &str) -> Result<Option<Vec<u8>>> {
        state::get(key).map_err(error)
    }

    /// The value under `key` as UTF-8 text, if any.
    pub fn get_string(key: &str) -> Result<Option<String>> {
        match get(key)? {
            Some(bytes) => Ok(Some(String::from_utf8(bytes)?)),
            None => Ok(None),
        }
    }

    /// Stores `value` under `key`.
    pub fn set(key: &str, value: impl AsRef<[u8]>) -> Result<()> {
        state::set(key, value.as_ref()).map_err(error)
    }

    /// Removes `key`.
    pub fn delete(key: &str) -> Result<()> {
        state::delete(key).map_err(error)
    }

    /// Every key, sorted.
    pub fn keys() -> Result<Vec<String>> {
        state::list_keys().map_err(error)
    }
}

/// The session the call belongs to.
pub mod session {
    use super::{Mode, wit::session};

    /// Its id (the `edge-session` header).
    pub fn id() -> String {
        session::id()
    }

    /// The mode it is served in for this call.
    pub fn mode() -> Mode {
        session::current_mode()
    }

    /// Asks for `mode` from the next call on; the platform may decline.
    pub fn request_mode(mode: Mode) {
        session::request_mode(mode)
    }
}

#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::exports::edge::function::handler::Guest;

    /// Runs `handle` on a call's inputs, in the shape the WIT wants.
    pub fn call<O: Into<Vec<u8>>>(
        inputs: Vec<crate::Input>,
        handle: impl FnOnce(crate::Request) -> crate::Result<O>,
    ) -> Result<Vec<u8>, String> {
        handle(crate::Request { inputs })
            .map(Into::into)
            .map_err(|e| e.0)
    }
}

/// Exports `handler` (a `fn(Request) -> Result<O>` where `O` is
/// `Vec<u8>`, `String` or `&'static str`) as the function's entry point.
/// Use it once per crate.
#[macro_export]
macro_rules! handler {
    ($handler:path) => {
        struct __EdgeHandler;

        impl $crate::__private::Guest for __EdgeHandler {
            fn handle(
                inputs: ::std::vec::Vec<$crate::Input>,
            ) -> ::std::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                $crate::__private::call(inputs, $handler)
            }
        }

        $crate::bindings::__export_bindings!(__EdgeHandler with_types_in $crate::bindings);
    };
}
