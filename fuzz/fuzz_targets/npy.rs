//! The `.npy` reader on any bytes: no panic, no allocation beyond what the header's shape
//! needs; what it reads writes back to a file that reads to the same tensor.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rainier_tensor::npy;

fuzz_target!(|data: &[u8]| {
    let Ok(t) = npy::read(data) else { return };
    let mut out = Vec::new();
    npy::write(&t, &mut out).expect("writing a tensor that was read");
    let back = npy::read(&out[..]).expect("reading what was written");
    assert_eq!(back, t);
});
