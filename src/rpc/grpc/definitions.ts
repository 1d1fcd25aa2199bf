// grpc-js method definitions built from the protobuf-es descriptors: one code generator serves both
// listeners.
import { fromBinary, toBinary, type DescMessage, type DescMethod, type DescService } from "@bufbuild/protobuf";
import type { MethodDefinition } from "@grpc/grpc-js";

export type AnyMessage = Parameters<typeof toBinary>[1];

function serializer(schema: DescMessage): (value: AnyMessage) => Buffer {
  return (value) => {
    const bytes = toBinary(schema, value);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

function deserializer(schema: DescMessage): (bytes: Buffer) => AnyMessage {
  return (bytes) => fromBinary(schema, bytes);
}

export function methodDefinition(service: DescService, method: DescMethod): MethodDefinition<AnyMessage, AnyMessage> {
  return {
    path: `/${service.typeName}/${method.name}`,
    requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
    responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
    requestSerialize: serializer(method.input),
    requestDeserialize: deserializer(method.input),
    responseSerialize: serializer(method.output),
    responseDeserialize: deserializer(method.output),
    originalName: method.localName,
  };
}
