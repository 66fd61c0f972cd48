//! `run`: scheduling under semaphores, input checks and deadlock reports.

use std::collections::BTreeMap;

use rainier_arch::Chip;
use rainier_funcsim::{run, RunError};
use rainier_isa::parse;
use rainier_tensor::{DType, HostTensor};

#[test]
fn semaphores_order_engines_and_deadlocks_are_reported() {
    // GpSimd writes, Vector reads after the semaphore: the result must reflect the write even
    // though the Vector instruction comes first in program order.
    let p = parse(
        "hbm y: f32[2, 4] output
tensor_scalar sb[0:2]@16:f32[4], sb[0:2]@0:f32[4] op0=add operand0=1 S[0]>=1 S[1]++
iota sb[0:2]@0:f32[4] base=10 channel_multiplier=100 steps=[1] S[0]++
dma_copy y, sb[0:2]@16:f32[4] S[1]>=1
",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = run(&p, &Chip::Trn2.params(), &BTreeMap::new()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.outputs["y"].to_f32(), vec![11.0, 12.0, 13.0, 14.0, 111.0, 112.0, 113.0, 114.0]);
    assert_eq!(out.instructions_executed, 3);
    assert_eq!(out.machine.semaphores[..2], [1, 1]);

    let stuck = parse("memset sb[0:1]@0:f32[1] value=0 S[7]>=2\nmemset sb[0:1]@4:f32[1] value=0 engine=gpsimd S[7]++\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let e = run(&stuck, &Chip::Trn1.params(), &BTreeMap::new())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert_eq!(e, "deadlock: vector engine waits forever at line 1 (instruction #0 memset) on S[7]>=2 (S[7] is 1)");
}

#[test]
fn inputs_are_checked_by_name_dtype_and_shape() {
    let p = parse("hbm x: f32[2, 3] input\nmemset sb[0:1]@0:f32[1] value=0\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let chip = Chip::Trn2.params();
    let ok = HostTensor::from_f32(DType::F32, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert!(run(&p, &chip, &BTreeMap::from([("x".to_string(), ok.clone())])).is_ok());
    assert!(matches!(run(&p, &chip, &BTreeMap::new()), Err(RunError::MissingInput(n)) if n == "x"));
    let wrong = HostTensor::from_f32(DType::F16, &[2, 3], &[0.5; 6]);
    let e = run(&p, &chip, &BTreeMap::from([("x".to_string(), wrong)]))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert_eq!(e, "input 'x': the program declares f32[2, 3], the file holds f16[2, 3]");
    let e = run(&p, &chip, &BTreeMap::from([("x".to_string(), ok.clone()), ("z".to_string(), ok)]))
        .err();
    assert!(matches!(e, Some(RunError::UnknownInput(n, _)) if n == "z"));
}
