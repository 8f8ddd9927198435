//! `hog`: misbehaves on demand, to test that the node survives its guests.
//!
//! Input `loop` spins forever, `grow` allocates memory without bound, `trap`
//! hits `unreachable`, `deep` recurses without bound; anything else returns `ok`.

use edge_guest::{Guest, concat_inputs, types::Input};
use std::hint::black_box;

struct Hog;

fn spin() -> ! {
    let mut x: u64 = 0;
    loop {
        x = black_box(x.wrapping_add(1));
    }
}

fn grow() -> usize {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        blocks.push(black_box(vec![0xA5; 1 << 20]));
        black_box(&blocks);
    }
}

/// Recurses on scalars only, so each frame lives on the wasm stack (not the
/// shadow stack in linear memory) and the host's stack limit is what stops it.
#[allow(unconditional_recursion)]
fn deep(depth: u64) -> u64 {
    deep(black_box(depth + 1)).wrapping_add(black_box(depth))
}

impl Guest for Hog {
    fn handle(inputs: Vec<Input>) -> Result<Vec<u8>, String> {
        match concat_inputs(&inputs).as_slice() {
            b"loop" => spin(),
            b"grow" => Ok(grow().to_string().into_bytes()),
            b"trap" => core::arch::wasm32::unreachable(),
            b"deep" => Ok(deep(0).to_string().into_bytes()),
            _ => Ok(b"ok".to_vec()),
        }
    }
}

edge_guest::export!(Hog with_types_in edge_guest);
