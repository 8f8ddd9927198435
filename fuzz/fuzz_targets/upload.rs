//! The upload path inside the node: preamble and validation of arbitrary
//! bytes answer Ok or an error, never panic (compilation itself runs in a
//! separate, limited process).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = edge_core::registry::precheck(data);
});
