"""The upload form, parsed from the request stream into memory, and refused at the size limit.

Starlette's own form parsing (FastAPI's ``UploadFile``) spools a file over 1 MB to a temporary
file on disk. An upload here is somebody's video: it is kept in memory only, forwarded to Triton
and dropped. So the body is fed chunk by chunk to python-multipart's streaming parser, each part
collected in memory, and reading stops as soon as the body passes the limit: a declared
``Content-Length`` over it is refused before a byte of the body is read, a chunked body at the
first chunk past it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

FILE_FIELD = "file"
#: Room for the multipart framing and the small fields around the file.
FORM_OVERHEAD_BYTES = 64 * 1024
MAX_TEXT_FIELD_BYTES = 1024
MAX_PARTS = 8
MULTIPART = b"multipart/form-data"


class FormError(Exception):
    """A request whose form cannot be used; ``status_code`` is the HTTP answer to give."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


@dataclass
class UploadForm:
    """The parsed form: the file's bytes and name, and the text fields."""

    data: bytes = b""
    filename: str = ""
    content_type: str = ""
    has_file: bool = False
    fields: dict[str, str] = field(default_factory=dict)


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    content_type: str = ""
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0


class _Collector:
    """python-multipart callbacks that keep every part in memory, within the limits."""

    def __init__(self, max_file_bytes: int, text_fields: frozenset[str]) -> None:
        self.max_file_bytes = max_file_bytes
        self.text_fields = text_fields
        self.form = UploadForm()
        self.parts = 0
        self.ended = False
        self._part = _Part()
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._begin,
            "on_header_field": lambda data, start, end: self._header_field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self._end,
            "on_end": self._form_end,
        }

    def _begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise FormError(400, f"the form has more than {MAX_PARTS} parts")
        self._part = _Part()
        self._headers = {}

    def _header_end(self) -> None:
        self._headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if disposition != b"form-data" or b"name" not in options:
            raise FormError(400, "a form part has no Content-Disposition: form-data name")
        part = self._part
        part.name = options[b"name"].decode("utf-8", errors="replace")
        if b"filename" in options:
            part.filename = options[b"filename"].decode("utf-8", errors="replace")
        part.content_type = self._headers.get(b"content-type", b"").decode("latin-1").strip()
        if part.name == FILE_FIELD:
            if self.form.has_file:
                raise FormError(400, f"the form has more than one '{FILE_FIELD}' field: send one file per request")
        elif part.name not in self.text_fields:
            known = ", ".join(sorted({FILE_FIELD, *self.text_fields}))
            raise FormError(400, f"unknown form field '{part.name}' (fields: {known})")

    def _data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        part.size += end - start
        limit = self.max_file_bytes if part.name == FILE_FIELD else MAX_TEXT_FIELD_BYTES
        if part.size > limit:
            if part.name == FILE_FIELD:
                raise FormError(413, too_large_message(self.max_file_bytes))
            raise FormError(400, f"form field '{part.name}' is longer than {MAX_TEXT_FIELD_BYTES} bytes")
        part.chunks.append(bytes(data[start:end]))

    def _end(self) -> None:
        part = self._part
        data = b"".join(part.chunks)
        part.chunks = []
        if part.name == FILE_FIELD:
            self.form.data = data
            self.form.filename = part.filename or ""
            self.form.content_type = part.content_type
            self.form.has_file = True
        else:
            if part.name in self.form.fields:
                raise FormError(400, f"form field '{part.name}' is given twice")
            try:
                self.form.fields[part.name] = data.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise FormError(400, f"form field '{part.name}' is not UTF-8 text") from None

    def _form_end(self) -> None:
        self.ended = True


def too_large_message(limit: int) -> str:
    return f"the upload is larger than the limit of {format_bytes(limit)}"


def format_bytes(size: int) -> str:
    """``268435456`` -> ``"256 MiB"``; sizes below 1 MiB in KiB."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            value = size / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} bytes"


def boundary_of(headers: Mapping[str, str]) -> bytes:
    """The multipart boundary of a request, or FormError 415 / 400."""
    content_type = headers.get("content-type", "")
    kind, options = parse_options_header(content_type)
    if kind != MULTIPART:
        shown = content_type.split(";")[0].strip() or "none"
        raise FormError(415, f"send the upload as multipart/form-data (the content type was {shown})")
    boundary = options.get(b"boundary")
    if not boundary:
        raise FormError(400, "the multipart/form-data content type has no boundary")
    return boundary


def check_declared_length(headers: Mapping[str, str], max_body_bytes: int) -> None:
    """Refuses a body whose declared ``Content-Length`` is over the limit, before reading it."""
    declared = headers.get("content-length")
    if declared is None:
        return
    try:
        length = int(declared)
    except ValueError:
        raise FormError(400, f"Content-Length '{declared}' is not a number") from None
    if length > max_body_bytes:
        raise FormError(413, too_large_message(max_body_bytes - FORM_OVERHEAD_BYTES))


async def read_form(
    headers: Mapping[str, str],
    stream: AsyncIterator[bytes],
    max_file_bytes: int,
    text_fields: frozenset[str],
    timeout_s: float,
) -> UploadForm:
    """Parses a multipart upload from ``stream`` into memory.

    Args:
        headers: the request headers (lowercase names).
        stream: the request body, chunk by chunk.
        max_file_bytes: largest file accepted.
        text_fields: names of the small text fields allowed beside ``file``.
        timeout_s: time allowed for the whole body to arrive.

    Raises:
        FormError: 415 not multipart, 413 over the limit, 408 too slow, 400 anything malformed.
    """
    boundary = boundary_of(headers)
    max_body = max_file_bytes + FORM_OVERHEAD_BYTES
    check_declared_length(headers, max_body)
    collector = _Collector(max_file_bytes, text_fields)
    parser = MultipartParser(boundary, collector.callbacks())

    async def consume() -> None:
        received = 0
        async for chunk in stream:
            received += len(chunk)
            if received > max_body:
                raise FormError(413, too_large_message(max_file_bytes))
            parser.write(chunk)

    try:
        # wait_for rather than asyncio.timeout: the client side still runs on Python 3.10.
        await asyncio.wait_for(consume(), timeout_s)
    except asyncio.TimeoutError:
        raise FormError(408, f"the upload did not arrive within {timeout_s:g} s") from None
    except MultipartParseError as error:
        raise FormError(400, f"the multipart form is malformed: {error}") from None
    if not collector.ended:
        raise FormError(400, "the multipart form ended early: the upload was cut off")
    if not collector.form.has_file:
        raise FormError(400, f"the form has no '{FILE_FIELD}' field: attach the video or image as '{FILE_FIELD}'")
    return collector.form
