"""Rainier's planners from Python: training, plan search, serving, comparisons, validation.

Each function runs the ``rainier`` command of the same name in this process (the same Rust
code, so the same numbers as the CLI, bit for bit) and returns its JSON output as a result
object: fields as attributes (``r.step_time_s``, ``r.plan.tp``), ``r["field"]``,
``r.to_dict()``, ``r.to_json()`` and, with pandas installed, ``r.to_pandas()``.

Keyword arguments are the command's flags by their long names with ``_`` for ``-``
(``global_batch=1024`` is ``--global-batch 1024``); ``True`` sets a switch, ``None`` or
``False`` leaves a flag out, a list gives a comma-separated value (``only=["trn2",
"h100"]``) or, for ``patch``, one flag per item. A model is a preset name, a ``config.json``
path, a Hugging Face snapshot directory or a ``dict`` (a parsed ``config.json``). What-if chips
come from ``patch=`` (``"trn2:hbm_bytes_per_s=5.8e12,as=trn2-2xbw"`` or ``{"chip": "trn2",
"as": "trn2-2xbw", "set": {"hbm_bytes_per_s": 5.8e12}}``) or a ``catalog=`` file.

>>> import rainier.plan as rp
>>> r = rp.train("llama3-70b", "trn2", chips=1024, seq=8192, global_batch=1024, tp=8, pp=4)
>>> r.tokens_per_s, r.mfu
>>> best = rp.search("llama3-70b", "trn2", chips=1024, seq=8192, global_batch=1024, top=5)
>>> best.to_pandas()[["tp", "pp", "dp", "tokens_per_s"]]

Errors raise :class:`InputError` (bad input), :class:`NoPlanError` (valid input that no plan
fits or meets) or :class:`UsageError` (an unknown argument), each with ``kind``, ``field``
(the flag at fault, or ``None``) and the CLI's one-line message. Plan searches release the GIL.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
from typing import Any, Iterable, Mapping

from . import _native

__all__ = [
    "train",
    "search",
    "serve",
    "serve_search",
    "compare",
    "compare_serve",
    "validate",
    "chips",
    "models",
    "run",
    "command",
    "Result",
    "TrainResult",
    "SearchResult",
    "ServeResult",
    "CompareResult",
    "ValidationResult",
    "CatalogResult",
    "ModelsResult",
    "RainierError",
    "InputError",
    "NoPlanError",
    "UsageError",
]


class RainierError(ValueError):
    """A request Rainier refuses: ``kind`` (``input``, ``usage``, ``no_plan``), ``field`` (the
    flag at fault, as a keyword name, or ``None``) and the message."""

    def __init__(self, message: str, kind: str, field: str | None):
        super().__init__(message)
        self.kind = kind
        self.field = field.replace("-", "_") if field else None


class InputError(RainierError):
    """Bad input: a value, a file, a model, a chip, a patch."""


class UsageError(RainierError):
    """An argument the command does not take, or a malformed value."""


class NoPlanError(RainierError):
    """Valid input for which no plan exists: it does not fit in memory or meets no SLO."""


_ERRORS = {"input": InputError, "usage": UsageError, "no_plan": NoPlanError}


def _wrap(value: Any) -> Any:
    if isinstance(value, dict):
        return Result(value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


class Result:
    """A command's JSON output as an object. ``schema`` names it (``rainier.train``, ...)."""

    #: The list of records ``to_pandas`` makes rows of (``None``: the whole result is one row).
    _rows_field: str | None = None

    def __init__(self, data: Mapping[str, Any], text: str | None = None):
        object.__setattr__(self, "_data", dict(data))
        object.__setattr__(self, "_text", text)

    def __getattr__(self, name: str) -> Any:
        data = object.__getattribute__(self, "_data")
        if name in data:
            return _wrap(data[name])
        raise AttributeError(
            f"{type(self).__name__} has no field {name!r} (fields: {', '.join(data)})"
        )

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("results are read-only; use to_dict() for a copy to change")

    def __getitem__(self, key: str) -> Any:
        return _wrap(self._data[key])

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def __iter__(self):
        return iter(self._data)

    def __dir__(self) -> Iterable[str]:
        return [*self._data, "to_dict", "to_json", "to_pandas", "keys"]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Result) and self._data == other._data

    def __repr__(self) -> str:
        schema = self._data.get("schema", {}).get("name", "")
        scalars = [
            f"{k}={v!r}"
            for k, v in self._data.items()
            if isinstance(v, (int, float, str, bool)) and k not in ("schema", "rainier")
        ][:6]
        more = ", ..." if len(scalars) == 6 else ""
        head = f"{schema}: " if schema else ""
        return f"{type(self).__name__}({head}{', '.join(scalars)}{more})"

    def keys(self):
        return self._data.keys()

    @property
    def schema(self) -> str:
        """The output's schema name, e.g. ``rainier.train``."""
        return self._data.get("schema", {}).get("name", "")

    def to_dict(self) -> dict:
        """A deep copy of the JSON object."""
        return copy.deepcopy(self._data)

    def to_json(self) -> str:
        """The JSON exactly as the CLI prints it (``--json``)."""
        return self._text if self._text is not None else json.dumps(self._data, indent=2)

    def to_pandas(self):
        """A ``pandas.DataFrame``: one row per plan, chip or point where the result lists them,
        else one row; nested fields flattened as ``plan.tp``. Needs pandas."""
        try:
            import pandas
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("to_pandas() needs pandas: pip install pandas") from e
        rows = self._data.get(self._rows_field) if self._rows_field else None
        return pandas.json_normalize(rows if rows is not None else [self._data])


class TrainResult(Result):
    """``rainier train``: one plan's step time, throughput, memory, cost."""


class SearchResult(TrainResult):
    """``rainier train --search``: the best plan's fields, and ``plans`` (the top plans)."""

    _rows_field = "plans"


class ServeResult(Result):
    """``rainier serve`` (and ``--search``): TTFT, TPOT, throughput, memory, cost."""


class CompareResult(Result):
    """``rainier compare`` (and ``--serve``): one row per chip kind in ``rows``."""

    _rows_field = "rows"


class ValidationResult(Result):
    """``rainier validate``: every published point predicted, in ``points``."""

    _rows_field = "points"


class CatalogResult(Result):
    """``rainier chips``: the catalog, one entry per chip in ``chips``."""

    _rows_field = "chips"


class ModelsResult(Result):
    """``rainier models``: the presets, in ``models``."""

    _rows_field = "models"


_RESULTS = {
    "rainier.train": TrainResult,
    "rainier.train-search": SearchResult,
    "rainier.serve": ServeResult,
    "rainier.serve-search": ServeResult,
    "rainier.serve-disaggregated": ServeResult,
    "rainier.compare": CompareResult,
    "rainier.compare-serve": CompareResult,
    "rainier.validate": ValidationResult,
    "rainier.catalog": CatalogResult,
    "rainier.models": ModelsResult,
}


def _patch_spec(patch: str | Mapping[str, Any]) -> str:
    if isinstance(patch, str):
        return patch
    unknown = set(patch) - {"chip", "as", "set"}
    if unknown or "chip" not in patch or not patch.get("set"):
        raise InputError(
            f"a patch is {{'chip': ..., 'set': {{figure: value}}, 'as': name}}, not {dict(patch)!r}",
            "input",
            "patch",
        )
    changes = [f"{k}={v!r}" if isinstance(v, float) else f"{k}={v}" for k, v in patch["set"].items()]
    if patch.get("as"):
        changes.append(f"as={patch['as']}")
    return f"{patch['chip']}:{','.join(changes)}"


def _value(v: Any) -> str:
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    return str(v)


def _flags(options: Mapping[str, Any]) -> list[str]:
    args: list[str] = []
    for name, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + name.rstrip("_").replace("_", "-")
        if value is True:
            args.append(flag)
        elif name == "patch":
            for p in value if isinstance(value, (list, tuple)) else [value]:
                args += [flag, _patch_spec(p)]
        elif isinstance(value, (list, tuple)):
            args += [flag, ",".join(_value(v) for v in value)]
        else:
            args += [flag, _value(value)]
    return args


def command(*args: str) -> Result | str:
    """Runs any ``rainier`` command line (``command("train", "--model", ...)``) and returns its
    JSON output as a result (``--json`` is added); the other functions are shorthands. With
    ``--dump-scenario``, ``--help`` or ``-h`` it returns the text the command prints."""
    argv = [str(a) for a in args]
    text_out = any(a in ("--dump-scenario", "--help", "-h") for a in argv)
    if "--json" not in argv and not text_out:
        argv.append("--json")
    ok, text = _native.run_command(argv)
    if not ok:
        error = json.loads(text)
        cls = _ERRORS.get(error["kind"], RainierError)
        raise cls(error["message"], error["kind"], error["field"])
    if text_out:
        return text
    data = json.loads(text)
    cls = _RESULTS.get(data.get("schema", {}).get("name"), Result)
    return cls(data, text.rstrip("\n"))


def _with_model(model: Any, run) -> Result:
    """Runs ``run(model_arg)``; a ``dict`` model is written as a config.json under the
    temporary folder at a path named by its content, so the same dict gives the same output
    (the model's name in reports is that path)."""
    if not isinstance(model, Mapping):
        return run(_value(model))
    text = json.dumps(dict(model), sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    folder = os.path.join(tempfile.gettempdir(), f"rainier-model-{digest}")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "config.json")
    if not os.path.exists(path):
        with open(path + ".part", "w") as f:
            f.write(text)
        os.replace(path + ".part", path)
    return run(path)


def train(model, chip: str, chips: int, seq: int, global_batch: int, **plan) -> TrainResult:
    """One training step of ``model`` on ``chips`` × ``chip`` under a plan (``tp``, ``pp``,
    ``dp``, ``cp``, ``ep``, ``vpp``, ``micro_batch``, ``precision``, ``recompute``, ``zero``,
    ...; what is not given is chosen, as the CLI does). ``rainier train``."""
    job = dict(chip=chip, chips=chips, seq=seq, global_batch=global_batch, **plan)
    return _with_model(model, lambda m: command("train", "--model", m, *_flags(job)))


def search(
    model, chip: str, chips: int, seq: int, global_batch: int, top: int | None = None, **constraints
) -> SearchResult:
    """The best plan a full search finds (``top`` plans in ``plans``), with any plan flag as a
    constraint. ``rainier train --search``."""
    job = dict(chip=chip, chips=chips, seq=seq, global_batch=global_batch, top=top, **constraints)
    return _with_model(model, lambda m: command("train", "--model", m, "--search", *_flags(job)))


def serve(model, chip: str, chips: int, **plan) -> ServeResult:
    """Serving ``model`` on ``chips`` × ``chip``: TTFT, TPOT, throughput, continuous batching,
    memory, $ per million output tokens (``tp``, ``batch``, ``input_len``, ``output_len``,
    ``weights``, ``workload``, ``rate``, ...). ``rainier serve``."""
    job = dict(chip=chip, chips=chips, **plan)
    return _with_model(model, lambda m: command("serve", "--model", m, *_flags(job)))


def serve_search(model, chip: str, chips: int, **constraints) -> ServeResult:
    """The cheapest serving plan and concurrency meeting the SLO (``slo_ttft_ms``,
    ``slo_tpot_ms``). ``rainier serve --search``."""
    job = dict(chip=chip, chips=chips, **constraints)
    return _with_model(model, lambda m: command("serve", "--model", m, "--search", *_flags(job)))


def compare(model=None, **job) -> CompareResult:
    """The same training job on every chip kind, each with its best plan (``chips``,
    ``tokens``, ``seq``, ``global_batch``, ``pricing``, ``baseline``, ``only``...).
    ``rainier compare``."""
    if model is None:
        return command("compare", *_flags(job))
    return _with_model(model, lambda m: command("compare", "--model", m, *_flags(job)))


def compare_serve(model=None, **job) -> CompareResult:
    """Serving on every chip kind at an SLO. ``rainier compare --serve``."""
    if model is None:
        return command("compare", "--serve", *_flags(job))
    return _with_model(model, lambda m: command("compare", "--serve", "--model", m, *_flags(job)))


def validate() -> ValidationResult:
    """Every published point predicted and its error. ``rainier validate``."""
    return command("validate")


def chips(**catalog) -> CatalogResult:
    """The hardware catalog (with ``catalog=`` and ``patch=`` applied). ``rainier chips``."""
    return command("chips", *_flags(catalog))


def models() -> ModelsResult:
    """The model presets with their parameters. ``rainier models``."""
    return command("models")


def run(scenario, **overrides) -> Result:
    """A scenario file (TOML, as ``rainier run``), keyword arguments overriding its flags."""
    return command("run", _value(scenario), *_flags(overrides))
