// grpc-js method definitions built from the protobuf-es descriptors: one code generator serves both
// listeners. Messages are read and written by codecs compiled from the same descriptors where they
// cover the type (wire-decoder.ts, wire-encoder.ts), by protobuf-es's fromBinary and toBinary elsewhere.
import { create, type DescMessage, type DescMethod, type DescService, fromBinary, isMessage, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import type { MethodDefinition } from "@grpc/grpc-js";
import { compileDecoder } from "./wire-decoder.js";
import { compileEncoder } from "./wire-encoder.js";
import { NotCompiled } from "./wire-types.js";

export type AnyMessage = Parameters<typeof toBinary>[1];

/** The bytes of a message or init object of `schema`, as meterd writes them (the bench clients too). */
export function serializer(schema: DescMessage): (value: AnyMessage) => Buffer {
  const compiled = compileEncoder(schema);
  const generic = (value: AnyMessage): Buffer => {
    const bytes = toBinary(schema, isMessage(value, schema) ? value : create(schema, value as MessageInitShape<DescMessage>));
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
  if (compiled === null) return generic;
  return (value) => {
    try {
      return compiled(value);
    } catch (error) {
      if (error instanceof NotCompiled) return generic(value);
      throw error;
    }
  };
}

/**
 * Whether responses of this type are written by a compiled encoder (wire-encoder.ts), which takes a
 * handler's plain init object as it is: such a response needs no create() before it is sent.
 */
export function encodesInitShapes(schema: DescMessage): boolean {
  return compileEncoder(schema) !== null;
}

/** The message `bytes` hold, as meterd reads it (the bench clients too). */
export function deserializer(schema: DescMessage): (bytes: Buffer) => AnyMessage {
  const compiled = compileDecoder(schema);
  if (compiled === null) return (bytes) => fromBinary(schema, bytes);
  return (bytes) => {
    try {
      return compiled(bytes) as AnyMessage;
    } catch {
      // Input the compiled decoder does not read, or malformed input (see wire-decoder.ts): fromBinary
      // reads it, or refuses it with its own error.
      return fromBinary(schema, bytes);
    }
  };
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
