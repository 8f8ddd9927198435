//! The two worlds a function's component may serve, and its pre-linked
//! instance for each.

use crate::engine::HostState;
use edge_host_api::bindings::FunctionPre;
use serde::{Deserialize, Serialize};
use wasmtime::component::Component;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

/// The world a function's component serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FunctionKind {
    /// `edge:function`: invoked through `POST /v1/functions/{name}/invoke`,
    /// with session state.
    #[default]
    Edge,
    /// `wasi:http/proxy`: serves the HTTP requests under `/{name}/`.
    Http,
}

/// A component pre-linked for instantiation, by its world.
pub enum Pre {
    /// An `edge:function` component.
    Edge(FunctionPre<HostState>),
    /// A `wasi:http/proxy` component.
    Http(ProxyPre<HostState>),
}

impl Pre {
    /// The `edge:function` pre-instance (an HTTP function has none).
    pub fn edge(&self) -> wasmtime::Result<&FunctionPre<HostState>> {
        match self {
            Pre::Edge(pre) => Ok(pre),
            Pre::Http(_) => Err(wasmtime::format_err!(
                "a wasi:http function is served under /{{name}}/, not invoked"
            )),
        }
    }

    /// The component it was linked from.
    pub fn component(&self) -> &Component {
        match self {
            Pre::Edge(pre) => pre.instance_pre().component(),
            Pre::Http(pre) => pre.instance_pre().component(),
        }
    }
}
