"""Checks of a V2 request in the binary data extension, before KServe decodes it.

The body is a JSON header (its length in ``inference-header-content-length``) followed by the raw
tensors of the inputs that give ``parameters.binary_data_size`` instead of ``data``, in input order;
BYTES elements are each a 4-byte little-endian length and that many bytes. KServe 0.21 trusts all of
it and fails on a bad length, size, shape or text with a 500; this names the problem (a 400).
"""

from __future__ import annotations

import math
import struct

import orjson

from components.serving.requests import RequestError, check_input_header

ITEM_SIZES = {
    "BOOL": 1,
    "INT8": 1,
    "UINT8": 1,
    "INT16": 2,
    "UINT16": 2,
    "FP16": 2,
    "INT32": 4,
    "UINT32": 4,
    "FP32": 4,
    "INT64": 8,
    "UINT64": 8,
    "FP64": 8,
}


def check_binary_request(body: bytes, header_length: str | None) -> None:
    """Raise ``RequestError`` naming the first problem of a binary data extension request body."""
    if header_length is None:
        raise RequestError(
            "the body is not JSON and has no inference-header-content-length header (the length of its "
            "JSON header, for the binary data extension)"
        )
    text = header_length.strip()
    if not (text.isascii() and text.isdigit()):
        raise RequestError(
            f"inference-header-content-length {header_length!r} is not a number of bytes (digits only)"
        )
    json_length = int(text)
    if not 0 < json_length <= len(body):
        raise RequestError(
            f"inference-header-content-length is {json_length}, but the body has {len(body)} bytes"
        )
    try:
        header = orjson.loads(body[:json_length])
    except orjson.JSONDecodeError as exc:
        raise RequestError(
            f"the first {json_length} bytes of the body (inference-header-content-length) are not JSON: {exc}"
        ) from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise RequestError('the JSON header must be an object with "inputs": a list of inputs')
    outputs = header.get("outputs")
    if outputs is not None and not (
        isinstance(outputs, list)
        and all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs)
    ):
        raise RequestError('"outputs" must be a list of objects, each with a "name"')
    if not isinstance(header.get("parameters") or {}, dict):
        raise RequestError('"parameters" must be an object')
    offset = json_length
    for item in header["inputs"]:
        if not isinstance(item, dict):
            raise RequestError(f"each input must be an object, not {type(item).__name__}")
        name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
        check_input_header(name, datatype, shape)
        parameters = item.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise RequestError(f"input {name!r}: parameters must be an object")
        if item.get("data") is not None:
            continue  # given in the JSON header
        if "binary_data_size" not in parameters:
            raise RequestError(f"input {name!r} has neither data nor parameters.binary_data_size")
        size = parameters["binary_data_size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise RequestError(f"input {name!r}: binary_data_size {size!r} must be a non-negative integer")
        if offset + size > len(body):
            raise RequestError(
                f"input {name!r}: binary_data_size is {size}, but only {len(body) - offset} bytes of the "
                "body are left (a truncated tensor?)"
            )
        chunk, offset = body[offset : offset + size], offset + size
        count = math.prod(shape)
        if datatype == "BYTES":
            _check_bytes_tensor(name, chunk, count)
        elif size != count * ITEM_SIZES[datatype]:
            raise RequestError(
                f"input {name!r}: shape {shape} of {datatype} needs {count * ITEM_SIZES[datatype]} bytes; "
                f"binary_data_size is {size}"
            )
    if offset != len(body):
        raise RequestError(
            f"the body has {len(body) - offset} bytes after the inputs' binary data "
            f"(their binary_data_size add up to {offset - json_length})"
        )


def _check_bytes_tensor(name: str, chunk: bytes, count: int) -> None:
    """``count`` elements, each a 4-byte little-endian length and that many bytes of UTF-8 text."""
    position = 0
    for index in range(count):
        if position + 4 > len(chunk):
            raise RequestError(
                f"input {name!r}: BYTES element {index} of {count}: its 4-byte length is past the end of "
                f"its binary_data_size ({len(chunk)} bytes)"
            )
        (length,) = struct.unpack_from("<I", chunk, position)
        position += 4
        if position + length > len(chunk):
            raise RequestError(
                f"input {name!r}: BYTES element {index} has length {length}, but only "
                f"{len(chunk) - position} bytes of its binary_data_size are left"
            )
        try:
            chunk[position : position + length].decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError(f"input {name!r}: BYTES element {index} is not UTF-8 text") from None
        position += length
    if position != len(chunk):
        raise RequestError(
            f"input {name!r}: {len(chunk) - position} bytes left after its {count} BYTES elements "
            "(shape and binary_data_size disagree)"
        )
