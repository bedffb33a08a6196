"""Every request is decodable and within its bounds before a handler sees it.

grpc's protobuf deserializer raises DecodeError (invalid UTF-8 in a string field, bytes that are
no message) before any handler runs, and grpc answers that with UNKNOWN. The RequestGuard gives
every method a deserializer that hands such a request on as refused, and the handler's place is
taken by one that answers INVALID_ARGUMENT naming the field. For the ArtForge service it also
bounds every repeated field and every name, id and label (`check_sizes`) as the request is read,
so nothing is built from an oversized one: a history of a million messages costs its parse only.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from artforge.config import Limits
from artforge.engines.stylize import MAX_BLEND
from artforge.engines.text import MAX_STOP_STRINGS
from artforge.errors import ArtForgeError, invalid

ARTFORGE_METHODS = "/artforge.v1.ArtForge/"
# Strings the engines check against limits of their own (prompts, the conversation, the JSON
# Schema, stop strings); every other string a client sends is a name, an id or a label.
ENGINE_CHECKED_STRINGS = frozenset({"prompt", "negative_prompt", "system_prompt", "content", "json_schema", "stop"})


def repeated_bounds(limits: Limits) -> dict[str, tuple[int, str]]:
    """Each repeated field of the requests (by name) -> the most entries, and what one is called."""
    return {
        "history": (limits.max_history_messages, "messages"),
        "stop": (MAX_STOP_STRINGS, "stop strings"),
        "loras": (limits.max_loras_per_request, "LoRAs"),
        "controls": (limits.max_controls_per_request, "controls"),
        "styles": (MAX_BLEND, "styles"),
        "weights": (MAX_BLEND, "weights"),
    }


def check_sizes(message: Message, limits: Limits, path: str = "") -> None:
    """INVALID_ARGUMENT naming the first repeated field or name, id or label of `message` over its bound."""
    bounds = repeated_bounds(limits)
    for field, value in message.ListFields():
        name = path + field.name
        if not field.is_repeated:
            _check_value(field, value, name, limits)
            continue
        most, entries = bounds[field.name]
        if len(value) > most:
            raise invalid(name, f"{len(value)} {entries}; the limit is {most}")
        for index, item in enumerate(value):
            _check_value(field, item, f"{name}[{index}]", limits)


def _check_value(field: FieldDescriptor, value: Any, name: str, limits: Limits) -> None:
    if field.message_type is not None:
        check_sizes(value, limits, f"{name}.")
    elif field.type == FieldDescriptor.TYPE_STRING and field.name not in ENGINE_CHECKED_STRINGS:
        most = limits.max_label_chars if field.name == "label" else limits.max_name_chars
        if len(value) > most:
            raise invalid(name, f"is {len(value)} characters; the limit is {most}")


def _varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while shift < 64:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
    raise ValueError("a varint longer than 10 bytes")


def _not_utf8(descriptor: Descriptor, data: bytes, path: str = "") -> str:
    """The first string field in `data` (the wire format of `descriptor`) that is not UTF-8, as a path; "" if none."""
    position = 0
    counts: dict[int, int] = {}  # repeated fields: entries seen so far
    while position < len(data):
        key, position = _varint(data, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, position = _varint(data, position)
        elif wire_type in (1, 5):
            position += 8 if wire_type == 1 else 4
        elif wire_type == 2:
            size, position = _varint(data, position)
            chunk, position = data[position : position + size], position + size
            field = descriptor.fields_by_number.get(number)
            if field is None:
                continue
            name = path + field.name
            if field.is_repeated:
                counts[number] = counts.get(number, 0) + 1
                name += f"[{counts[number] - 1}]"
            if field.type == FieldDescriptor.TYPE_STRING:
                try:
                    chunk.decode("utf-8")
                except UnicodeDecodeError:
                    return name
            elif field.message_type is not None and (found := _not_utf8(field.message_type, chunk, f"{name}.")):
                return found
        else:
            return ""  # groups (proto2 only) or garbage: not a string's fault
    return ""


def _decode_error(message_class: type[Message], data: bytes) -> ArtForgeError:
    descriptor = message_class.DESCRIPTOR
    try:
        field = _not_utf8(descriptor, data)
    except (IndexError, ValueError):  # bytes that end mid-field: the sentence below says it
        field = ""
    if field:
        return invalid(field, "is not valid UTF-8; strings in requests must be UTF-8 text")
    return invalid("request", f"is not a valid {descriptor.full_name} message; send one serialized as protobuf")


@dataclass(frozen=True)
class Refused:
    """What the guard's deserializer hands on instead of a request it refuses."""

    error: ArtForgeError


async def _refuse(request: object, context: grpc.aio.ServicerContext) -> None:
    if isinstance(request, Refused):
        await context.abort(grpc.StatusCode[request.error.code.name], request.error.message)


def _guarded(behavior: Callable[..., Any], streaming_requests: bool) -> Callable[..., Any]:
    """`behavior`, of the same kind (coroutine or async generator), refusing a Refused request first."""

    async def checked(requests: AsyncIterator[object], context: grpc.aio.ServicerContext) -> AsyncIterator[object]:
        async for request in requests:
            await _refuse(request, context)
            yield request

    async def admit(request: object, context: grpc.aio.ServicerContext) -> object:
        if streaming_requests:
            return checked(request, context)
        await _refuse(request, context)
        return request

    if inspect.isasyncgenfunction(behavior):

        async def stream(request: object, context: grpc.aio.ServicerContext) -> AsyncIterator[object]:
            async for response in behavior(await admit(request, context), context):
                yield response

        return stream

    async def call(request: object, context: grpc.aio.ServicerContext) -> object:
        return await behavior(await admit(request, context), context)

    return call


class RequestGuard(grpc.aio.ServerInterceptor):
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}  # per method: they never change

    def _deserializer(self, message_class: type[Message], bounded: bool) -> Callable[[bytes], object]:
        def deserialize(data: bytes) -> object:
            try:
                request = message_class.FromString(data)
                if bounded:
                    check_sizes(request, self.limits)
            except DecodeError:
                return Refused(_decode_error(message_class, data))
            except ArtForgeError as error:
                return Refused(error)
            return request

        return deserialize

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if details.method in self._handlers:
            return self._handlers[details.method]
        handler = await continuation(details)
        # The generated code's deserializer is the request class's FromString.
        message_class = getattr(handler.request_deserializer, "__self__", None) if handler else None
        if message_class is None:
            return handler
        deserialize = self._deserializer(message_class, details.method.startswith(ARTFORGE_METHODS))
        serialize = handler.response_serializer
        if handler.unary_unary:
            guarded = grpc.unary_unary_rpc_method_handler(_guarded(handler.unary_unary, False), deserialize, serialize)
        elif handler.unary_stream:
            guarded = grpc.unary_stream_rpc_method_handler(_guarded(handler.unary_stream, False), deserialize, serialize)
        elif handler.stream_stream:  # server reflection
            guarded = grpc.stream_stream_rpc_method_handler(_guarded(handler.stream_stream, True), deserialize, serialize)
        else:
            return handler  # client streaming: no service here has such a method
        self._handlers[details.method] = guarded
        return guarded
