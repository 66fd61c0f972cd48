"""rainier.plan: the planners from Python give the CLI's output bit for bit, typed results,
exceptions naming the field, patched chips and scenarios, and searches that release the GIL."""

import json
import os
import pathlib
import subprocess
import threading

import pytest

import rainier.plan as rp

ROOT = pathlib.Path(__file__).resolve().parents[2]


def cli_binary() -> pathlib.Path:
    """The `rainier` binary of this checkout: $RAINIER_BIN (scripts/test.sh sets it), else the
    newest of target/{debug,release}/rainier."""
    if os.environ.get("RAINIER_BIN"):
        return pathlib.Path(os.environ["RAINIER_BIN"])
    built = [p for p in (ROOT / "target/debug/rainier", ROOT / "target/release/rainier") if p.exists()]
    assert built, "no rainier binary: run `cargo build` (scripts/test.sh does) or set RAINIER_BIN"
    return max(built, key=lambda p: p.stat().st_mtime)


def cli(*args: str) -> str:
    out = subprocess.run([str(cli_binary()), *args], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.rstrip("\n")


TRAIN = dict(chip="trn2", chips=256, seq=8192, global_batch=512, tp=8, pp=2, recompute="full")
TRAIN_ARGS = ["--chip", "trn2", "--chips", "256", "--seq", "8192", "--global-batch", "512",
              "--tp", "8", "--pp", "2", "--recompute", "full"]


def test_train_is_the_cli_bit_for_bit():
    r = rp.train("llama3-70b", **TRAIN)
    assert isinstance(r, rp.TrainResult)
    assert r.to_json() == cli("train", "--model", "llama3-70b", *TRAIN_ARGS, "--json")
    assert r.schema == "rainier.train"
    assert r.plan.tp == 8 and r.plan.pp == 2 and r.chip == "trn2"
    assert r.step_time_s > 0 and 0 < r.mfu < 1
    assert r["tokens_per_s"] == r.to_dict()["tokens_per_s"] == json.loads(r.to_json())["tokens_per_s"]


def test_search_serve_and_compare_are_the_cli():
    s = rp.search("llama3-8b", "h100", chips=64, seq=4096, global_batch=256, top=3)
    assert s.to_json() == cli("train", "--model", "llama3-8b", "--chip", "h100", "--chips", "64",
                              "--seq", "4096", "--global-batch", "256", "--search", "--top", "3",
                              "--json")
    assert s.schema == "rainier.train-search" and len(s.plans) == 3
    assert s.plans[0].tokens_per_s >= s.plans[1].tokens_per_s
    v = rp.serve("llama3-8b", "trn2", chips=1, tp=4, batch=4, input_len=512, output_len=128)
    assert v.to_json() == cli("serve", "--model", "llama3-8b", "--chip", "trn2", "--chips", "1",
                              "--tp", "4", "--batch", "4", "--input-len", "512",
                              "--output-len", "128", "--json")
    assert v.ttft_ms > 0 and v.tpot_ms > 0
    c = rp.compare("llama3-8b", chips=64, tokens="1T", only=["trn2", "h100"])
    assert c.to_json() == cli("compare", "--model", "llama3-8b", "--chips", "64", "--tokens",
                              "1T", "--only", "trn2,h100", "--json")
    assert sorted(row.chip for row in c.rows) == ["h100", "trn2"]


def test_a_config_dict_is_a_model():
    config = json.loads((ROOT / "crates/rainier-cli/data/models/qwen3-32b.json").read_text())
    from_dict = rp.serve(config, "h100", chips=2, tp=2)
    assert rp.serve(dict(config), "h100", chips=2, tp=2).to_json() == from_dict.to_json()
    path = rp.serve(str(ROOT / "crates/rainier-cli/data/models/qwen3-32b.json"), "h100", chips=2, tp=2)
    assert from_dict.tpot_ms == path.tpot_ms and from_dict.model_parameters == path.model_parameters


def test_patched_chips_and_scenarios(tmp_path):
    patch = {"chip": "h100", "as": "h100-2xbw", "set": {"hbm_bytes_per_s": 6.7e12}}
    fast = rp.serve("llama3-8b", "h100-2xbw", chips=1, tp=1, patch=[patch])
    base = rp.serve("llama3-8b", "h100", chips=1, tp=1)
    assert fast.tpot_ms < 0.7 * base.tpot_ms
    assert any("what-if chip h100-2xbw" in n for n in fast.notes)
    scenario = tmp_path / "s.toml"
    scenario.write_text('command = "serve"\nmodel = "llama3-8b"\nchip = "h100"\nchips = 1\ntp = 1\n')
    assert rp.run(scenario) == base
    assert rp.run(scenario, batch=8).batch == 8
    dumped = rp.command("serve", "--model", "llama3-8b", "--chip", "h100", "--chips", "1", "--dump-scenario")
    assert isinstance(dumped, str) and 'command = "serve"' in dumped


def test_errors_are_exceptions_naming_the_field():
    with pytest.raises(rp.InputError) as e:
        rp.train("llama3-8b", "trn9", chips=8, seq=4096, global_batch=64)
    assert e.value.field == "chip" and e.value.kind == "input" and "trn9" in str(e.value)
    with pytest.raises(rp.InputError) as e:
        rp.train("llama3-8b", "h100", chips=8, seq=0, global_batch=64)
    assert e.value.field == "seq"
    with pytest.raises(rp.InputError) as e:
        rp.train("no-such-model", "h100", chips=8, seq=4096, global_batch=64)
    assert e.value.field == "model"
    with pytest.raises(rp.NoPlanError):
        rp.train("llama3-70b", "h100", chips=1, seq=8192, global_batch=64)
    with pytest.raises(rp.UsageError) as e:
        rp.train("llama3-8b", "h100", chips=8, seq=4096, global_batch=64, tpp=2)
    assert e.value.field == "tpp"
    with pytest.raises(rp.InputError) as e:
        rp.chips(patch="h100:hbm_bytes_per_sec=1e12")
    assert e.value.field == "patch" and "hbm_bytes_per_s" in str(e.value)
    assert issubclass(rp.NoPlanError, ValueError)


def test_results_are_read_only_and_describe_themselves():
    r = rp.train("llama3-8b", "h100", chips=8, seq=4096, global_batch=64)
    with pytest.raises(AttributeError):
        r.mfu = 1.0
    with pytest.raises(AttributeError, match="no field 'nonsense'"):
        r.nonsense
    assert "rainier.train" in repr(r) and "mfu" in dir(r)
    d = r.to_dict()
    d["mfu"] = 2.0
    assert r.mfu != 2.0


def test_to_pandas_has_a_row_per_plan_chip_or_point():
    pandas = pytest.importorskip("pandas")
    s = rp.search("llama3-8b", "h100", chips=64, seq=4096, global_batch=256, top=4)
    frame = s.to_pandas()
    assert isinstance(frame, pandas.DataFrame) and len(frame) == 4 and "tokens_per_s" in frame
    v = rp.validate().to_pandas()
    assert len(v) >= 10 and "error" in v
    one = rp.train("llama3-8b", "h100", chips=8, seq=4096, global_batch=64).to_pandas()
    assert len(one) == 1 and "plan.tp" in one


def test_a_search_releases_the_gil():
    done = threading.Event()
    result = {}

    def work():
        result["r"] = rp.search("llama3-70b", "h100", chips=4096, seq=8192, global_batch=2048)
        done.set()

    thread = threading.Thread(target=work)
    ticks = 0
    thread.start()
    while not done.is_set():
        ticks += 1
    thread.join()
    assert result["r"].tokens_per_s > 0
    # With the GIL held for the whole search, this thread could not run at all meanwhile.
    assert ticks > 10_000, ticks


def test_the_sweep_example_runs(tmp_path):
    import runpy

    example = runpy.run_path(str(ROOT / "examples/python/sweep_chips.py"))
    rows = example["main"](str(tmp_path / "cost-vs-days.png"))
    assert {r[0] for r in rows} == set(example["CHIPS"])
    for chip, chips, days, usd, mfu, plan in rows:
        assert days > 0 and usd > 0 and 0 < mfu < 1 and plan.tp >= 1
    # Four times the chips trains faster on every chip kind.
    by = {(r[0], r[1]): r[2] for r in rows}
    assert all(by[(c, 4096)] < by[(c, 1024)] for c in example["CHIPS"])
