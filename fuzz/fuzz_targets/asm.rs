//! The assembly parser and verifier on any text: no panic; what parses prints back to text
//! that parses to the same program, and verifies (or not) the same on every chip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rainier_arch::Chip;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(program) = rainier_isa::parse(text) else { return };
    let printed = program.to_string();
    let again = rainier_isa::parse(&printed)
        .unwrap_or_else(|e| panic!("printed program does not parse: {e}\n{printed}"));
    // Text, not `==`: a `nan` immediate round-trips but is not equal to itself.
    assert_eq!(again.to_string(), printed, "print/parse round trip");
    for chip in [Chip::Trn1, Chip::Trn2, Chip::Trn3] {
        let core = chip.params().core;
        let a = rainier_isa::verify(&program, &core).is_ok();
        let b = rainier_isa::verify(&again, &core).is_ok();
        assert_eq!(a, b, "verify differs after the round trip on {chip}");
    }
});
