//! Hugging Face `config.json` loading on any text: a model or a one-line error without control
//! characters, no panic; a model that loads has positive sizes and a parameter count (its
//! arithmetic checked for overflow by the fuzz build's debug assertions).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rainier_model::Model;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Model::from_config_json(text, "fuzz.json") {
        Ok(m) => {
            assert!(m.hidden > 0 && m.layers > 0 && m.heads > 0 && m.vocab > 0);
            let _ = m.params();
        }
        Err(e) => assert!(!e.to_string().chars().any(char::is_control), "control characters: {e}"),
    }
});
