//! The workflow spec parser and validator: any bytes give a plan or an
//! error, never a panic; a plan is internally consistent.
#![no_main]

use edge_workflow::spec::Plan;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(plan) = Plan::parse(data) {
        assert_eq!(plan.topo.len(), plan.len());
        for (i, preds) in plan.preds.iter().enumerate() {
            for p in preds {
                assert!(plan.succs[*p].contains(&i));
            }
        }
        // Every task comes after its predecessors in the order.
        let position: Vec<usize> = {
            let mut at = vec![0; plan.len()];
            for (k, t) in plan.topo.iter().enumerate() {
                at[*t] = k;
            }
            at
        };
        for (i, preds) in plan.preds.iter().enumerate() {
            for p in preds {
                assert!(position[*p] < position[i]);
            }
        }
    }
});
