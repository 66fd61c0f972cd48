//! The built-in catalog: complete, sourced, overridable.

use rainier_hw::{Catalog, Family, Grade, HwError};

#[test]
fn every_required_chip_is_there_with_sourced_positive_figures() {
    let catalog = Catalog::built_in();
    for name in [
        "trn1", "trn2", "trn3", "inf2", "h100", "h200", "b200", "tpu-v5e", "tpu-v5p", "tpu-v6e",
        "tpu-v7", "gb200", "a100",
    ] {
        let chip = catalog.chip(name).expect(name);
        for (field, f) in chip.figures() {
            assert!(!f.source.trim().is_empty(), "{name}.{field}");
            assert!(f.value.is_finite() && f.value >= 0.0, "{name}.{field}");
        }
        assert!(chip.peak_flops.fp8.value >= chip.peak_flops.bf16.value, "{name}");
        assert!(chip.peak_flops.fp32.value < chip.peak_flops.bf16.value, "{name}");
    }
    let h100 = catalog.chip("H100").expect("case-insensitive");
    assert_eq!(h100.family, Family::Gpu);
    assert_eq!(h100.peak_flops.bf16.grade, Grade::Doc);
    assert_eq!(catalog.chip("trn2").expect("trn2").cores_per_chip, 8);
}

#[test]
fn unknown_chip_lists_the_known_ones() {
    let e = Catalog::built_in().chip("tpu-v9").expect_err("unknown");
    assert!(matches!(e, HwError::UnknownChip { .. }));
    assert!(e.to_string().contains("trn2") && e.to_string().contains("tpu-v7"), "{e}");
}

#[test]
fn overrides_replace_and_extend() {
    let catalog = Catalog::built_in();
    let mut h100 = catalog.chip("h100").expect("h100").clone();
    h100.node.usd_per_chip_hour.value = 2.0;
    let mut custom = h100.clone();
    custom.name = "h100-cheap".into();
    let file = serde_json::json!({"about": "test", "chips": [h100, custom]}).to_string();
    let merged = catalog.clone().with_overrides(&file, "mine.json").expect("valid");
    assert_eq!(merged.chip("h100").expect("h100").node.usd_per_chip_hour.value, 2.0);
    assert!(merged.chip("h100-cheap").is_ok());
    assert_eq!(merged.chips.len(), catalog.chips.len() + 1);

    let bad = file.replace("\"value\":2.0", "\"value\":-2.0");
    let e = catalog.clone().with_overrides(&bad, "mine.json").expect_err("negative");
    assert!(e.to_string().starts_with("mine.json: chip `h100`"), "{e}");
    let e = catalog.with_overrides("{\"chips\": 3}", "mine.json").expect_err("shape");
    assert!(e.to_string().starts_with("mine.json:"), "{e}");
}

/// Found by the `catalog` fuzz target: a field name with a newline made a two-line error.
#[test]
fn errors_quoting_the_file_stay_on_one_line() {
    for text in [
        "{\"about\": \"x\", \"chips\": [{\"name\": \"a\", \"cores_p\\nx\": 1}]}",
        "{\"about\": \"x\", \"chips\": [{\"name\": \"a\\u001b[31m\"}]}",
    ] {
        let e =
            Catalog::built_in().with_overrides(text, "c.json").expect_err("invalid").to_string();
        assert!(!e.contains('\n') && !e.contains('\u{1b}'), "{e}");
        assert!(e.starts_with("c.json"), "{e}");
    }
}
