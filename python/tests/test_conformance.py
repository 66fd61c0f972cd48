"""The SDK's per-API examples (../shared/nki/conformance/legacy), unmodified `unittest` files
importing `neuronxcc.nki`, run after `rainier.nki.install()`. Each file must pass except the
tests named in KNOWN with the reason; a known failure that starts passing fails too, so the
list stays exact."""

import importlib.util
import sys
import unittest
import warnings

import numpy as np
import pytest

from conftest import need_shared

#: test id ("Class.method", or "import" when the module cannot even be imported) -> why.
KNOWN = {
    "test_nki_isa_activation": {
        "TestNkiIsaExamplesActivation.test_activation":
            "the example asks for a bf16 result (dtype=nl.bfloat16) and compares it with "
            "np.allclose's fp32 tolerance; Rainier rounds to bf16 as the hardware does",
    },
    "test_nki_isa_range_select": {
        "TestNkiIsaExamplesRangeSelect.test_range_select_example":
            "its fp8 cases expect FP32_MIN to become -inf in an fp8 output (as the range_select "
            "docs say the hardware does); Rainier's fp8 casts saturate to ±max (docs/isa.md), "
            "a numerics question named in docs/nki.md; bf16, fp16 and fp32 match",
    },
}


def conformance_files():
    try:
        root = need_shared() / "conformance" / "legacy"
    except pytest.skip.Exception:
        return []
    return sorted(root.glob("test_*.py"))


def run_file(path):
    """Imports and runs one unittest file; returns ({test id: error text}, tests run)."""
    name = f"rainier_conformance_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            try:
                spec.loader.exec_module(mod)
            except Exception as e:  # noqa: BLE001 - reported as the import failure
                return {"import": f"{type(e).__name__}: {e}"}, 0
            suite = unittest.defaultTestLoader.loadTestsFromModule(mod)
            result = unittest.TestResult()
            suite.run(result)
    finally:
        sys.path.pop(0)
    failed = {}
    for test, err in result.errors + result.failures:
        tid = f"{type(test).__name__}.{test._testMethodName}"
        failed[tid] = err.strip().splitlines()[-1]
    return failed, result.testsRun


@pytest.mark.parametrize("path", conformance_files(), ids=lambda p: p.stem)
def test_conformance_file(path):
    failed, ran = run_file(path)
    known = KNOWN.get(path.stem, {})
    if "*" in known:
        assert failed, f"{path.stem} now passes: remove it from KNOWN ({known['*']})"
        # Every failure must be Rainier saying what it lacks, never a wrong answer.
        for tid, err in failed.items():
            assert "not supported by Rainier" in err or "not supported" in err, f"{tid}: {err}"
        return
    unexpected = {t: e for t, e in failed.items() if t not in known}
    assert not unexpected, f"{path.stem}: unexpected failures {unexpected}"
    fixed = [t for t in known if t not in failed]
    assert not fixed, f"{path.stem}: {fixed} now pass; remove them from KNOWN"
    assert ran > 0 or "import" in known
