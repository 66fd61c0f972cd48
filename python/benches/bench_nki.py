"""Host speed of the NKI front end: tracing plus simulation, wall-clock seconds on this machine.

    python python/benches/bench_nki.py [--shared ../shared]

1. The fully optimised matmul tutorial at its published shape (lhsT 8192x4096, rhs 8192x8192,
   bf16, trn1; nki.benchmark with nt.tensor types: time only), target < 10 s; the simulated
   time beside the published 6,970 us (timings.json).
2. Every kernel file in kernels/ through its own __main__ (the matmul files benchmark all
   their versions at the published shape), target < 60 s in all.
"""

import argparse
import contextlib
import io
import os
import pathlib
import runpy
import sys
import time

import rainier.nki as rn

MAINS = [
    "legacy/nki-samples/tensor_addition/tensor_addition_nki_kernels.py",
    "legacy/nki-samples/tensor_addition/spmd_tensor_addition_nki_kernels.py",
    "legacy/nki-samples/tensor_addition/spmd_multiple_nc_tensor_addition_nki_kernels.py",
    "legacy/nki-samples/transpose2d/transpose2d_nki_kernels.py",
    "legacy/nki-samples/average_pool2d/average_pool2d_nki_kernels.py",
    "legacy/nki-samples/rmsnorm/rmsnorm_nki_kernels.py",
    "legacy/nki-samples/layernorm/layernorm_nki_kernel.py",
    "legacy/nki-samples/fused_mamba/mamba_nki_kernels.py",
    "legacy/nki-samples/matrix_multiplication/matrix_multiplication_nki_kernels.py",
    "current/aws-neuron-sdk/tensor_addition/tensor_addition_nki_kernels.py",
    "current/aws-neuron-sdk/transpose2d/transpose2d_nki_kernels.py",
    "current/aws-neuron-sdk/average_pool2d/average_pool2d_nki_kernels.py",
    "current/aws-neuron-sdk/simulate/nki_simulate_example.py",
    "current/aws-neuron-sdk/getting_started_baremetal.py",
    "current/aws-neuron-sdk/fused_mamba/mamba_nki_kernels.py",
    "current/aws-neuron-sdk/matrix_multiplication/matrix_multiplication_nki_kernels.py",
    "current/nki-samples/matrix_multiplication/matrix_multiplication_nki_kernels.py",
]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shared", default=str(pathlib.Path(__file__).resolve().parents[3] / "shared"))
    a = p.parse_args()
    kernels = pathlib.Path(a.shared) / "nki" / "kernels"
    rn.install(chip="trn1")
    import neuronxcc.nki as nki
    import neuronxcc.nki.language as nl
    import neuronxcc.nki.typing as nt

    sys.path.insert(0, str(kernels / "legacy/nki-samples/matrix_multiplication"))
    import matrix_multiplication_nki_kernels as mm

    t0 = time.perf_counter()
    b = nki.benchmark(warmup=5, iters=10)(mm.nki_matmul_fully_optimized_)
    b(nt.tensor[[8192, 4096], nl.bfloat16], nt.tensor[[8192, 8192], nl.bfloat16])
    wall = time.perf_counter() - t0
    sim = b.benchmark_result.nc_latency.get_latency_percentile(99)
    print(f"fully optimised matmul 4096x8192x8192 bf16 on trn1: {wall:.2f} s wall "
          f"(target 10 s), simulated {sim:.0f} us vs published 6970 us "
          f"({(sim / 6970 - 1) * 100:+.1f} %), {b.last_result.instructions} instructions")

    total = 0.0
    for rel in MAINS:
        path = kernels / rel
        os.environ.pop("NEURON_PLATFORM_TARGET_OVERRIDE", None)
        sys.path.insert(0, str(path.parent))
        sys.argv = [str(path)]
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            runpy.run_path(str(path), run_name="__main__")
        dt = time.perf_counter() - t0
        total += dt
        sys.path.pop(0)
        print(f"  {dt:7.2f} s  {rel}")
    print(f"every kernel file's __main__: {total:.2f} s wall (target 60 s)")


if __name__ == "__main__":
    main()
