//! Catalog overrides (`--catalog FILE`) on any text: a catalog or a one-line error without
//! control characters, no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rainier_hw::Catalog;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = Catalog::built_in().with_overrides(text, "fuzz.json") {
        assert!(!e.to_string().chars().any(char::is_control), "control characters: {e}");
    }
});
