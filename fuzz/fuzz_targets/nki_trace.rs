//! The NKI back end on any trace the Python front end could send (JSON): compiled, or an
//! error, never a panic; what compiles passes the hardware rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rainier_arch::Chip;
use rainier_nki::{compile, Trace};

fuzz_target!(|data: &[u8]| {
    let Ok(trace) = serde_json::from_slice::<Trace>(data) else { return };
    for chip in [Chip::Trn1, Chip::Trn3] {
        let params = chip.params();
        if let Ok(c) = compile(&trace, &params) {
            rainier_isa::verify(&c.program, &params.core)
                .unwrap_or_else(|e| panic!("compiled program breaks the rules on {chip}: {e}"));
        }
    }
});
