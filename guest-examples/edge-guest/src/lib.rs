//! Guest-side bindings of `edge:function` (generated from `../wit`, the same
//! files the host reads). A function implements [`Guest`] and calls
//! `edge_guest::export!(MyFunction with_types_in edge_guest);`.

wit_bindgen::generate!({
    world: "function",
    path: "../../wit",
    pub_export_macro: true,
    export_macro_name: "export",
    default_bindings_module: "edge_guest",
});

pub use edge::function::{session, state, types};
pub use exports::edge::function::handler::Guest;

/// The bytes of all inputs, concatenated in order.
pub fn concat_inputs(inputs: &[types::Input]) -> Vec<u8> {
    inputs.iter().flat_map(|i| i.data.iter().copied()).collect()
}
