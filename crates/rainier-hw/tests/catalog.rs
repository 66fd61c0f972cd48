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

/// A node's draw at load beyond its accelerators, where given, stays under its rating.
#[test]
fn host_power_at_load_is_below_the_rating() {
    for chip in &Catalog::built_in().chips {
        let Some(host) = &chip.node.host_w_per_chip else { continue };
        let at_load = chip.power_w.value + host.value;
        assert!(at_load < chip.node.system_w_per_chip.value, "{}: {at_load} W", chip.name);
        assert!(!host.source.is_empty() && host.grade == Grade::Derived, "{}", chip.name);
    }
}

/// Every price says on what terms it is sold, and every assumed price is a range around it.
#[test]
fn prices_state_their_basis_and_assumed_ones_a_range() {
    let catalog = Catalog::built_in();
    for chip in &catalog.chips {
        let node = &chip.node;
        assert!(node.price_basis.is_some(), "{}: price_basis", chip.name);
        assert_eq!(
            node.committed_basis.is_some(),
            node.usd_per_chip_hour_committed.is_some(),
            "{}: committed_basis",
            chip.name
        );
        let assumed = node.usd_per_chip_hour.grade == Grade::Assumed;
        assert_eq!(node.usd_per_chip_hour_range.is_some(), assumed, "{}: range", chip.name);
        if let Some([lo, hi]) = node.usd_per_chip_hour_range {
            assert!(lo < hi, "{}: a range, not a point", chip.name);
        }
    }
    // A range that does not hold the price is refused, naming the field.
    let mut trn4 = catalog.chip("trn4").expect("trn4").clone();
    trn4.node.usd_per_chip_hour_range = Some([1.0, 2.0]);
    let file = serde_json::json!({"about": "test", "chips": [trn4]}).to_string();
    let e = catalog.with_overrides(&file, "mine.json").expect_err("range outside");
    assert!(e.to_string().contains("node.usd_per_chip_hour_range"), "{e}");
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

/// A patch makes a what-if copy: the base stays, the copy's changed figures are graded what-if
/// and reach its NeuronCore parameters.
#[test]
fn a_patch_adds_a_what_if_copy_of_a_chip() {
    let patch = rainier_hw::Patch::parse("trn2:hbm_bytes_per_s=5.8e12,as=trn2-2xbw", "--patch")
        .expect("a valid patch");
    assert_eq!(rainier_hw::Patch::parse(&patch.spec(), "--patch").expect("a valid patch"), patch);
    let catalog = Catalog::built_in().with_patch(&patch).expect("a valid patch");
    let base = catalog.chip("trn2").expect("a valid patch");
    let copy = catalog.chip("trn2-2xbw").expect("a valid patch");
    assert_eq!(base.hbm_bytes_per_s.value, 2.9e12);
    assert_eq!(copy.hbm_bytes_per_s.value, 5.8e12);
    assert_eq!(copy.hbm_bytes_per_s.grade, Grade::WhatIf);
    assert!(copy.hbm_bytes_per_s.source.contains("was 2.9e12"), "{}", copy.hbm_bytes_per_s.source);
    assert_eq!(copy.table_name(), "trn2");
    assert_eq!(copy.what_if_figures(), vec![("hbm_bytes_per_s".to_string(), 5.8e12)]);
    assert!(base.what_if_figures().is_empty());
    let params = copy.neuron_params().expect("a valid patch");
    assert_eq!(params.hbm_bytes_per_s.value, 5.8e12);
    assert_eq!(
        params.core.tensor_clock_hz.value,
        base.neuron_params().expect("a valid patch").core.tensor_clock_hz.value
    );
}

/// NeuronCore parameters, plain fields and prices patch in place; each change is named.
#[test]
fn a_patch_in_place_sets_core_parameters_and_prices() {
    let spec = "trn2:neuron_core.tensor_clock_hz=4.8e9,node.usd_per_chip_hour=2.5";
    let patch = rainier_hw::Patch::parse(spec, "scenario.toml").expect("a valid patch");
    let catalog = Catalog::built_in().with_patch(&patch).expect("a valid patch");
    let chip = catalog.chip("trn2").expect("a valid patch");
    assert_eq!(chip.node.usd_per_chip_hour.value, 2.5);
    assert_eq!(chip.neuron_params().expect("a valid patch").core.tensor_clock_hz.value, 4.8e9);
    let names: Vec<String> = chip.what_if_figures().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["node.usd_per_chip_hour", "neuron_core.tensor_clock_hz"]);
    assert!(chip.display.contains("what-if"), "{}", chip.display);
}

/// Bad patches: one line naming the chip, the figure and the nearest valid name.
#[test]
fn bad_patches_name_what_is_wrong() {
    let apply = |spec: &str| {
        let patch = rainier_hw::Patch::parse(spec, "--patch")?;
        Catalog::built_in().with_patch(&patch).map(|_| ()).map_err(|e| e.to_string())
    };
    let typo = apply("trn2:hbm_byte_per_s=5e12").expect_err("a bad patch");
    assert!(typo.contains("did you mean `hbm_bytes_per_s`"), "{typo}");
    assert!(apply("trn9:hbm_bytes_per_s=5e12")
        .expect_err("a bad patch")
        .contains("unknown chip `trn9`"));
    let range = apply("trn2:hbm_bytes_per_s=5e20").expect_err("a bad patch");
    assert!(range.contains("plausible range"), "{range}");
    let core = apply("trn2:neuron_core.tensor_clock=1e9").expect_err("a bad patch");
    assert!(core.contains("tensor_clock"), "{core}");
    assert!(apply("trn2:hbm_bytes_per_s=fast")
        .expect_err("a bad patch")
        .contains("takes a number"));
    assert!(apply("trn2:as=h100,power_w=500")
        .expect_err("a bad patch")
        .contains("already in the catalog"));
    assert!(apply("trn2").expect_err("a bad patch").contains("CHIP:KEY=VALUE"));
    assert!(apply("trn2:node.chips=3.5").expect_err("a bad patch").contains("a whole number"));
    assert!(apply("trn2:node.chips=32,as=trn2-32").is_ok(), "a count patches as an integer");
    for e in [typo, range, core] {
        assert_eq!(e.lines().count(), 1, "{e}");
    }
}
