"""The standard gRPC services next to ArtForge: health checking and server reflection
(what load balancers, grpc_health_probe and grpcurl use)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

SERVICE = "artforge.v1.ArtForge"


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.address) as ch:
        yield ch


@pytest.mark.parametrize("service", ["", SERVICE])
def test_health_check_reports_serving(channel, service):
    response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_health_check_of_an_unknown_service_is_not_found(channel):
    with pytest.raises(grpc.RpcError) as error:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
    assert error.value.code() is grpc.StatusCode.NOT_FOUND


def test_health_watch_streams_the_current_status(channel):
    call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=10)
    try:
        assert next(call).status == health_pb2.HealthCheckResponse.SERVING
    finally:
        call.cancel()


def test_reflection_lists_the_services(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
    assert len(responses) == 1
    names = {s.name for s in responses[0].list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names


def test_reflection_describes_the_artforge_service(channel):
    # What grpcurl does: resolve the service and its message types through reflection alone.
    pool = DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    service = pool.FindServiceByName(SERVICE)
    methods = {m.name: m for m in service.methods}
    assert {"GetServerInfo", "ListModels", "GenerateText", "WatchJob", "CancelJob", "GetJob"} <= set(methods)
    generate = methods["GenerateText"]
    assert generate.input_type.full_name == "artforge.v1.GenerateTextRequest"
    assert generate.output_type.full_name == "artforge.v1.JobEvent"
    assert generate.server_streaming and not generate.client_streaming
    assert not methods["GetJob"].server_streaming
    # Types from the imported files resolve too.
    event = pool.FindMessageTypeByName("artforge.v1.JobEvent")
    assert {"queued", "started", "text", "finished"} <= set(event.fields_by_name)
    assert "prompt" in generate.input_type.fields_by_name
