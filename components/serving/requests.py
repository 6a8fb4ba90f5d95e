"""Turning V1 and V2 (Open Inference Protocol) request bodies into model inputs, strictly.

Every problem raises ``RequestError`` with a message naming it (the server answers 400): a missing
or unknown feature, a wrong type, a non-finite number, an empty batch, a malformed body. Feature names
in requests are sanitized exactly as ingestion sanitized the training columns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from components.common.columns import sanitize_column_name
from components.common.errors import InputDataError
from components.common.features import FeatureValueError, derive_column, derived_columns
from components.serving.fast import category_text

MAX_ROWS = 100_000
_MEMO_SIZE = 256  # distinct request key layouts remembered (clients send the same few, again and again)


class RequestError(ValueError):
    """A request the model cannot answer; the message says why (HTTP 400)."""


@dataclass(frozen=True)
class Feature:
    name: str
    kind: str  # "numeric" | "categorical" | "boolean" | "datetime"
    spec: tuple = ()  # datetime: (format, parts)
    dtype: str = "object"  # the training column's dtype
    codes: bool = False  # categorical: integer codes kept as text ('3'); requests may send them as numbers


# V2 datatypes and the JSON values each may carry (None: a missing value). BYTES is the one V2 type for
# text; a [N, F] BYTES tensor carries whole table rows, numbers included, so it takes any scalar.
_DATATYPE_VALUES: dict[str, tuple[type, ...]] = {
    "BOOL": (bool,),
    **{t: (int,) for t in ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")},
    **{t: (int, float) for t in ("FP16", "FP32", "FP64")},
    "BYTES": (str, bytes, int, float, bool),
}


@dataclass
class Batch:
    """Validated model inputs: one list of floats (NaN for missing) per numeric feature, one list of
    texts (None for missing) per categorical feature, in the schema's order."""

    numeric: list[list[float]]
    categorical: list[list[str | None]]
    rows: int


class Schema:
    """The model's features, in training order, and how to read request values for them."""

    def __init__(
        self,
        features: Sequence[dict],
        numeric_names: Sequence[str],
        categorical_names: Sequence[str],
        ignored: Sequence[str] = (),
    ):
        """``features``: the model's raw features (metadata); ``numeric_names``/``categorical_names``: the
        columns the fitted preprocessing imputes/scales and one-hot encodes (booleans and datetimes
        become numeric columns first); ``ignored``: names a request may carry that the model does not take
        (the target, and columns training dropped such as ids), read and dropped."""
        self.features = [
            Feature(
                f["name"],
                f["kind"],
                (f["format"], tuple(f["parts"])) if f["kind"] == "datetime" else (),
                str(f.get("dtype", "object")),
                bool(f.get("codes")),
            )
            for f in features
        ]
        self.names = [f.name for f in self.features]
        self.numeric_names = list(numeric_names)
        self.categorical_names = list(categorical_names)
        self.ignored = frozenset(ignored) - set(self.names)
        self._derived = [f for f in self.features if f.kind in ("boolean", "datetime")]
        # categorical features trained on a numeric column (codes such as store ids) take numbers too;
        # those trained on text take text only
        self._numeric_categories = frozenset(
            f.name
            for f in self.features
            if f.kind == "categorical" and (f.codes or f.dtype.lower().startswith(("int", "uint", "float")))
        )
        self._code_categories = frozenset(f.name for f in self.features if f.codes)
        # request names -> training names, checked once per layout (sanitizing costs more than the model)
        self._clean_names: dict[Any, str] = {}
        self._record_layouts: dict[tuple, dict[str, str]] = {}

    # --- V1: {"instances": [...]} -------------------------------------------------------------------------
    def from_v1(self, payload: Any) -> Batch:
        if isinstance(payload, bytes | str):  # sent without a JSON content type: KServe passes it through
            try:
                payload = orjson.loads(payload)
            except orjson.JSONDecodeError as exc:
                raise RequestError(f"the request body is not valid JSON: {exc}") from exc
        if not isinstance(payload, dict):
            raise RequestError('a V1 request body must be a JSON object with an "instances" list')
        key = "instances" if "instances" in payload else "inputs" if "inputs" in payload else None
        if key is None:
            raise RequestError(
                'a V1 request body needs "instances": a list of records or of rows in feature order'
            )
        instances = payload[key]
        if not isinstance(instances, list):
            raise RequestError(f'"{key}" must be a list, not {type(instances).__name__}')
        self._check_rows(len(instances))
        if all(isinstance(row, dict) for row in instances):
            columns = self._columns_from_records(instances)
        elif all(isinstance(row, list) for row in instances):
            columns = self._columns_from_rows(instances, where="instance")
        else:
            raise RequestError(
                "each instance must be an object keyed by feature name or a list of values in feature order "
                f"{self.names} (not a mix)"
            )
        return self._batch(columns, len(instances))

    # --- V2: named inputs, one per feature, or one [N, F] tensor ------------------------------------------
    def from_v2(self, inputs: Sequence[tuple[str, str, Sequence[int], Any]]) -> Batch:
        """``inputs``: (name, datatype, shape, flat or nested data) for each request input."""
        if not inputs:
            raise RequestError('a V2 request needs "inputs": one per feature, or one [N, F] tensor')
        for name, datatype, shape, _ in inputs:
            check_input_header(name, datatype, shape)
        if len(inputs) == 1 and len(inputs[0][2]) == 2 and inputs[0][2][1] == len(self.names) > 1:
            name, datatype, shape, data = inputs[0]
            rows = self._reshape(name, shape, data)
            self._check_rows(len(rows))
            for row in rows:
                _check_datatype(name, datatype, row)
            return self._batch(self._columns_from_rows(rows, where=f"input '{name}' row"), len(rows))
        columns: dict[str, list] = {}
        lengths = set()
        for name, datatype, shape, data in inputs:
            clean = self._clean(name)
            if clean in columns:
                raise RequestError(f"input {name!r} is given twice")
            values = self._flat(name, shape, data)
            _check_datatype(name, datatype, values)
            lengths.add(len(values))
            if clean not in self.ignored:
                columns[clean] = values
        self._check_names(set(columns), "inputs")
        if len(lengths) != 1:
            raise RequestError(f"all inputs must have the same number of rows; got {sorted(lengths)}")
        rows = lengths.pop()
        self._check_rows(rows)
        return self._batch(columns, rows)

    # --- helpers -------------------------------------------------------------------------------------------
    def _clean(self, name: Any) -> str:
        clean = self._clean_names.get(name) if isinstance(name, str) else None
        if clean is None:
            try:
                clean = sanitize_column_name(name)
            except InputDataError as exc:
                raise RequestError(str(exc)) from exc
            if isinstance(name, str):
                _remember(self._clean_names, name, clean)
        return clean

    def _check_rows(self, rows: int) -> None:
        if rows == 0:
            raise RequestError("the batch is empty: send at least one instance")
        if rows > MAX_ROWS:
            raise RequestError(f"the batch has {rows} rows; at most {MAX_ROWS} per request")

    def _check_names(self, given: set[str], what: str) -> None:
        missing = [n for n in self.names if n not in given]
        unknown = sorted(given - set(self.names) - self.ignored)
        problems = []
        if missing:
            problems.append(f"missing features {missing}")
        if unknown:
            problems.append(f"unknown features {unknown}")
        if problems:
            raise RequestError(f"{what}: {'; '.join(problems)}; the model takes {self.names}")

    def _columns_from_records(self, records: list[dict]) -> dict[str, list]:
        columns: dict[str, list] = {name: [] for name in self.names}
        for index, record in enumerate(records):
            keys = tuple(record)
            mapping = self._record_layouts.get(keys)
            if mapping is None:
                mapping = self._record_layout(keys, index)
            for key, value in record.items():
                name = mapping[key]
                if name is not None:
                    columns[name].append(value)
        return columns

    def _record_layout(self, keys: tuple, index: int) -> dict[str, str | None]:
        """Record keys -> training names (None: ignored), for one order of keys; checked once, then remembered."""
        mapping: dict[str, str | None] = {}
        for key in keys:
            clean = self._clean(key)
            if clean in mapping.values():
                raise RequestError(f"instance {index}: two keys name feature {clean!r}")
            mapping[key] = clean
        self._check_names(set(mapping.values()), f"instance {index}")
        mapping = {key: (None if clean in self.ignored else clean) for key, clean in mapping.items()}
        _remember(self._record_layouts, keys, mapping)
        return mapping

    def _columns_from_rows(self, rows: list, where: str) -> dict[str, list]:
        width = len(self.names)
        for index, row in enumerate(rows):
            if not isinstance(row, list | tuple) or len(row) != width:
                length = len(row) if isinstance(row, list | tuple) else type(row).__name__
                raise RequestError(
                    f"{where} {index} has {length} values; the model takes {width}: {self.names}"
                )
        return {name: [row[j] for row in rows] for j, name in enumerate(self.names)}

    @staticmethod
    def _reshape(name: str, shape: Sequence[int], data: Any) -> list:
        n, f = shape
        if not isinstance(data, list):
            raise RequestError(f"input {name!r}: data must be a list")
        if any(isinstance(item, list) for item in data):  # nested: one list per row
            if len(data) != n or not all(isinstance(row, list) and len(row) == f for row in data):
                raise RequestError(
                    f"input {name!r}: shape {list(shape)} needs {n} rows of {f} values each "
                    "(all rows nested, or all values flat)"
                )
            return data
        if len(data) != n * f:
            raise RequestError(f"input {name!r}: shape {list(shape)} needs {n * f} values, got {len(data)}")
        return [data[i * f : (i + 1) * f] for i in range(n)]

    @staticmethod
    def _flat(name: str, shape: Sequence[int], data: Any) -> list:
        if not isinstance(data, list):
            raise RequestError(f"input {name!r}: data must be a list")
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise RequestError(
                f"input {name!r}: shape {list(shape)}; one value per row expected ([N] or [N, 1])"
            )
        nested = [isinstance(item, list) for item in data]
        if any(nested):
            if not all(nested) or any(len(item) != 1 for item in data):
                raise RequestError(
                    f"input {name!r}: one value per row expected, all flat ([v, ...]) or all nested "
                    "([[v], ...]), not a mix"
                )
            data = [item[0] for item in data]
        if shape[0] != len(data):
            raise RequestError(f"input {name!r}: shape {list(shape)} but {len(data)} values")
        return data

    def _batch(self, columns: dict[str, list], rows: int) -> Batch:
        if self._derived:
            columns = dict(columns)
            for feature in self._derived:
                columns.update(_derive(feature, columns.pop(feature.name)))
        numeric = [_numbers(name, columns[name]) for name in self.numeric_names]
        categorical = [
            _texts(name, columns[name], name in self._numeric_categories, name in self._code_categories)
            for name in self.categorical_names
        ]
        return Batch(numeric=numeric, categorical=categorical, rows=rows)


def _remember(memo: dict, key: Any, value: Any) -> None:
    if len(memo) >= _MEMO_SIZE:
        memo.clear()  # a client sending ever-new layouts gets the uncached speed, not unbounded memory
    memo[key] = value


def _derive(feature: Feature, values: list) -> dict[str, list[float]]:
    """A boolean or datetime feature's request values -> its numeric columns, as in training."""
    spec = {"name": feature.name, "kind": feature.kind}
    if feature.kind == "datetime":
        spec.update(format=feature.spec[0], parts=list(feature.spec[1]))
    for index, value in enumerate(values):
        if isinstance(value, list | dict) or (
            isinstance(value, float) and not math.isfinite(value) and value == value
        ):
            raise RequestError(
                f"feature {feature.name!r}: row {index} is {value!r}; it takes one {feature.kind}"
            )
    try:
        derived = derive_column(spec, values)
    except FeatureValueError as exc:
        raise RequestError(f"feature {feature.name!r}: {exc}") from exc
    return dict(zip(derived_columns(spec), derived, strict=True))


def _numbers(name: str, values: list) -> list[float]:
    out = []
    for index, value in enumerate(values):
        if value is None:
            out.append(math.nan)  # missing: the model imputes it, as in training
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise RequestError(
                f"feature {name!r} takes a number; row {index} has {type(value).__name__} {value!r}"
            )
        else:
            try:
                number = float(value)
            except OverflowError:
                raise RequestError(
                    f"feature {name!r}: row {index} is a number too large for a float"
                ) from None
            if not math.isfinite(number):
                raise RequestError(f"feature {name!r}: row {index} is {value!r}; numbers must be finite")
            out.append(number)
    return out


def _texts(name: str, values: list, numbers: bool = False, codes: bool = False) -> list[str | None]:
    """Category texts; ``numbers``: the feature was trained on a numeric column or on integer codes, so
    numbers are categories too (``codes``: written as training wrote them, 3.0 -> '3'). Booleans never are
    (a yes/no column is a boolean feature)."""
    out = []
    for index, value in enumerate(values):
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise RequestError(f"feature {name!r}: row {index} is not UTF-8 text") from None
        if isinstance(value, list | dict):
            raise RequestError(f"feature {name!r} takes one category; row {index} has {type(value).__name__}")
        if isinstance(value, bool) or (
            not numbers and isinstance(value, int | float) and value == value  # NaN: missing
        ):
            raise RequestError(
                f"feature {name!r} takes a category (text); row {index} has {type(value).__name__} {value!r}"
            )
        if isinstance(value, float) and not math.isfinite(value) and value == value:
            raise RequestError(f"feature {name!r}: row {index} is {value!r}; numbers must be finite")
        if codes and isinstance(value, float) and value.is_integer():
            value = int(value)
        out.append(category_text(value))
    return out


def check_input_header(name: Any, datatype: Any, shape: Any) -> None:
    """A V2 input's name, datatype and shape, as the protocol defines them."""
    if not isinstance(name, str):
        raise RequestError(f"an input's name must be a string, not {type(name).__name__} {name!r}")
    if datatype not in _DATATYPE_VALUES:
        raise RequestError(
            f"input {name!r}: datatype {datatype!r} is not a V2 datatype ({', '.join(_DATATYPE_VALUES)})"
        )
    if not isinstance(shape, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise RequestError(f"input {name!r}: shape {shape!r} must be a list of non-negative integers")


def _check_datatype(name: str, datatype: str, values: list) -> None:
    """Every value is one the input's datatype carries (or null: missing)."""
    allowed = _DATATYPE_VALUES[datatype]
    for index, value in enumerate(values):
        if value is None:
            continue
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise RequestError(
                f"input {name!r} is {datatype}; value {index} is {type(value).__name__} {value!r}"
            )
