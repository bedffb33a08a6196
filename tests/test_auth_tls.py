"""Bearer tokens, job ownership and TLS, through real `artforge serve` processes."""

from __future__ import annotations

import subprocess

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from artforge_client import ArtForgeError, Client
from artforge_client.v1 import jobs_pb2
from tests.conftest import TEST_CONFIG, start_server, stop_server

TOKEN = "s3cret"
# `--token s3cret` on the command line adds a "default" caller next to the file's two.
AUTH_CONFIG = TEST_CONFIG + '\n[auth]\ntokens = { alice = "a-token", bob = "b-token" }\n'


@pytest.fixture(scope="module")
def auth_server(models_dir, tmp_path_factory):
    running = start_server(models_dir, tmp_path_factory.mktemp("auth"), "--token", TOKEN, config=AUTH_CONFIG)
    yield running
    stop_server(running)


def refused(call) -> ArtForgeError:
    with pytest.raises(ArtForgeError) as error:
        call()
    return error.value


# -- tokens -------------------------------------------------------------------------------


def test_a_call_without_a_token_is_unauthenticated(auth_server):
    with Client(auth_server.address) as client:
        error = refused(client.server_info)
    assert error.code is grpc.StatusCode.UNAUTHENTICATED
    assert "needs a token" in error.message


def test_a_wrong_token_is_unauthenticated(auth_server):
    with Client(auth_server.address, token="not-the-token") as client:
        error = refused(client.server_info)
    assert error.code is grpc.StatusCode.UNAUTHENTICATED
    assert "not valid" in error.message


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.list_models(),
        lambda c: c.get_job("some-job"),
        lambda c: c.cancel("some-job"),
        lambda c: c.generate_text("Say hi.", max_tokens=4).wait(),
        lambda c: c.watch("some-job").wait(),
    ],
    ids=["ListModels", "GetJob", "CancelJob", "GenerateText", "WatchJob"],
)
@pytest.mark.parametrize("token", [None, "a-tokenX"], ids=["no-token", "wrong-token"])
def test_every_rpc_needs_a_valid_token(auth_server, call, token):
    with Client(auth_server.address, token=token) as client:
        error = refused(lambda: call(client))
    # UNAUTHENTICATED before anything else: not NOT_FOUND for the unknown job, no job run.
    assert error.code is grpc.StatusCode.UNAUTHENTICATED
    assert error.job_id == ""


def test_the_right_token_works(auth_server):
    with Client(auth_server.address, token=TOKEN) as client:
        info = client.server_info()
        assert info.auth_required
        assert info.api_version == "v1"
        assert "smollm2-135m-instruct" in {m.name for m in client.list_models()}
        stream = client.generate_text("Name a colour.", max_tokens=4, seed=1)
        pieces = list(stream.iter_text())
    assert stream.finished.state == jobs_pb2.JOB_STATE_SUCCEEDED
    assert pieces and "".join(pieces) == stream.finished.text
    assert 1 <= stream.finished.usage.completion_tokens <= 4


def test_tokens_from_the_config_file_work_too(auth_server):
    for token in ("a-token", "b-token"):
        with Client(auth_server.address, token=token) as client:
            assert client.server_info().auth_required


def test_health_check_needs_no_token(auth_server):
    with grpc.insecure_channel(auth_server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "artforge.v1.ArtForge"):
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert response.status == health_pb2.HealthCheckResponse.SERVING


# -- jobs belong to their caller ----------------------------------------------------------


@pytest.fixture(scope="module")
def alices_job(auth_server):
    with Client(auth_server.address, token="a-token") as alice:
        stream = alice.generate_text("Name a shape.", max_tokens=4, seed=2)
        assert stream.wait().state == jobs_pb2.JOB_STATE_SUCCEEDED
    return stream.job_id


def test_the_owner_sees_her_job(auth_server, alices_job):
    with Client(auth_server.address, token="a-token") as alice:
        assert alice.get_job(alices_job).state == jobs_pb2.JOB_STATE_SUCCEEDED
        watched = alice.watch(alices_job)
        assert watched.wait().state == jobs_pb2.JOB_STATE_SUCCEEDED


@pytest.mark.parametrize(
    "call",
    [lambda c, job: c.get_job(job), lambda c, job: c.cancel(job), lambda c, job: c.watch(job).wait()],
    ids=["GetJob", "CancelJob", "WatchJob"],
)
@pytest.mark.parametrize("token", ["b-token", TOKEN], ids=["bob", "default"])
def test_another_caller_is_denied_the_job(auth_server, alices_job, call, token):
    with Client(auth_server.address, token=token) as other:
        error = refused(lambda: call(other, alices_job))
    assert error.code is grpc.StatusCode.PERMISSION_DENIED
    assert "belongs to another user" in error.message
    with Client(auth_server.address, token="a-token") as alice:
        assert alice.get_job(alices_job).state == jobs_pb2.JOB_STATE_SUCCEEDED, "the job is untouched"


# -- TLS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return folder / "cert.pem", folder / "key.pem"


@pytest.fixture(scope="module")
def tls_server(models_dir, tmp_path_factory, certificate):
    cert, key = certificate
    running = start_server(models_dir, tmp_path_factory.mktemp("tls-server"), "--tls-cert", str(cert), "--tls-key", str(key))
    yield running
    stop_server(running)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_tls_client_trusting_the_certificate_works(tls_server, certificate, host):
    port = tls_server.address.rsplit(":", 1)[1]
    with Client(f"{host}:{port}", tls=True, root_certificates=certificate[0]) as client:
        info = client.server_info()
        assert info.api_version == "v1" and not info.auth_required
        stream = client.generate_text("Name a tree.", max_tokens=4, seed=3)
        pieces = list(stream.iter_text())
    assert stream.finished.state == jobs_pb2.JOB_STATE_SUCCEEDED
    assert pieces and "".join(pieces) == stream.finished.text


def test_root_certificates_as_bytes(tls_server, certificate):
    with Client(tls_server.address, tls=True, root_certificates=certificate[0].read_bytes()) as client:
        assert client.server_info().api_version == "v1"


def test_plaintext_client_cannot_talk_to_a_tls_server(tls_server):
    with Client(tls_server.address, timeout=20) as client:
        error = refused(client.server_info)
    assert error.code is grpc.StatusCode.UNAVAILABLE
    assert "cannot reach the ArtForge server" in error.message


def test_tls_client_not_trusting_the_certificate_is_refused(tls_server):
    with Client(tls_server.address, tls=True, timeout=20) as client:  # the system's CAs only
        error = refused(client.server_info)
    assert error.code is grpc.StatusCode.UNAVAILABLE
