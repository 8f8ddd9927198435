//! `echo`: returns its input (several inputs: their bytes concatenated in order).

use edge_guest::{Guest, concat_inputs, types::Input};

struct Echo;

impl Guest for Echo {
    fn handle(inputs: Vec<Input>) -> Result<Vec<u8>, String> {
        Ok(concat_inputs(&inputs))
    }
}

edge_guest::export!(Echo with_types_in edge_guest);
