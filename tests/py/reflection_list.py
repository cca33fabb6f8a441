"""Lists a gRPC server's services through server reflection (v1alpha, as
Python's grpcio-reflection speaks it) and calls one unary method with
request and response types built only from the descriptors the server sent.

Usage: reflection_list.py HOST:PORT SERVICE METHOD
Prints one JSON document: {"services": [...], "response": {...}}.
Exits non-zero, with the error on stderr, when anything fails.
"""

import json
import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main() -> int:
    target, service_name, method_name = sys.argv[1:4]
    channel = grpc.insecure_channel(target)
    database = ProtoReflectionDescriptorDatabase(channel)
    services = sorted(database.get_services())
    pool = descriptor_pool.DescriptorPool(database)
    service = pool.FindServiceByName(service_name)
    method = service.FindMethodByName(method_name)
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    call = channel.unary_unary(
        f"/{service.full_name}/{method.name}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_class.FromString,
    )
    response = call(request_class(), timeout=30)
    print(
        json.dumps(
            {
                "services": services,
                "response": json_format.MessageToDict(
                    response, preserving_proto_field_name=True
                ),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
