// gRPC server reflection (grpc.reflection.v1 and v1alpha) on both listeners, answered from the
// protobuf-es descriptors the services are built from: buf curl, grpcurl and Postman need no proto files.
import { type DescFile, type DescService, toBinary } from "@bufbuild/protobuf";
import { nestedTypes } from "@bufbuild/protobuf/reflect";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { ServerReflection, type ServerReflectionRequest } from "../../gen/grpc/reflection/v1/reflection_pb.js";
import {
  ServerReflection as ServerReflectionV1alpha,
  type ServerReflectionRequest as ServerReflectionRequestV1alpha,
} from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { type RpcService, rpcService } from "./service.js";

/** The reflection services' names: public, like health. */
export const REFLECTION_SERVICES = [ServerReflection.typeName, ServerReflectionV1alpha.typeName];

type MessageRequest = ServerReflectionRequest["messageRequest"] | ServerReflectionRequestV1alpha["messageRequest"];

/** A message_response, as an init object that fits both versions' ServerReflectionResponse. */
type MessageResponse =
  | { case: "fileDescriptorResponse"; value: { fileDescriptorProto: Uint8Array[] } }
  | { case: "allExtensionNumbersResponse"; value: { baseTypeName: string; extensionNumber: number[] } }
  | { case: "listServicesResponse"; value: { service: { name: string }[] } }
  | { case: "errorResponse"; value: { errorCode: number; errorMessage: string } };

/** Every file, symbol and extension reachable from the served services, by name. */
export class ReflectionIndex {
  readonly services: readonly string[];
  private readonly files = new Map<string, DescFile>();
  private readonly symbols = new Map<string, DescFile>();
  /** "extendee/number" to the file declaring that extension. */
  private readonly extensions = new Map<string, DescFile>();
  private readonly extensionNumbers = new Map<string, number[]>();
  private readonly messages = new Set<string>();
  private readonly serialized = new Map<DescFile, Uint8Array>();

  constructor(services: readonly DescService[]) {
    this.services = services.map((s) => s.typeName);
    for (const service of services) this.addFile(service.file);
  }

  /** The answers of one stream: a file already sent on it is not sent again as a dependency. */
  session(): (request: MessageRequest) => MessageResponse {
    const sent = new Set<DescFile>();
    return (request) => {
      switch (request.case) {
        case "listServices":
          return { case: "listServicesResponse", value: { service: this.services.map((name) => ({ name })) } };
        case "fileByFilename":
          return this.filesOf(this.files.get(request.value), sent, `file "${request.value}"`);
        case "fileContainingSymbol":
          return this.filesOf(this.symbols.get(request.value), sent, `symbol "${request.value}"`);
        case "fileContainingExtension": {
          const { containingType, extensionNumber } = request.value;
          const file = this.extensions.get(`${containingType}/${extensionNumber}`);
          return this.filesOf(file, sent, `extension ${extensionNumber} of "${containingType}"`);
        }
        case "allExtensionNumbersOfType": {
          if (!this.messages.has(request.value)) return notFound(`message type "${request.value}"`);
          const numbers = this.extensionNumbers.get(request.value) ?? [];
          return { case: "allExtensionNumbersResponse", value: { baseTypeName: request.value, extensionNumber: numbers } };
        }
        default:
          throw new ConnectError("a reflection request must set one of its message_request fields", Code.InvalidArgument);
      }
    };
  }

  /** `file` first, then its transitive dependencies that this stream has not been sent yet. */
  private filesOf(file: DescFile | undefined, sent: Set<DescFile>, what: string): MessageResponse {
    if (file === undefined) return notFound(what);
    const out: Uint8Array[] = [];
    const seen = new Set<DescFile>();
    const queue = [file];
    for (let next = queue.shift(); next !== undefined; next = queue.shift()) {
      if (seen.has(next)) continue;
      seen.add(next);
      if (next === file || !sent.has(next)) out.push(this.bytesOf(next));
      sent.add(next);
      queue.push(...next.dependencies);
    }
    return { case: "fileDescriptorResponse", value: { fileDescriptorProto: out } };
  }

  private bytesOf(file: DescFile): Uint8Array {
    let bytes = this.serialized.get(file);
    if (bytes === undefined) {
      bytes = toBinary(FileDescriptorProtoSchema, file.proto);
      this.serialized.set(file, bytes);
    }
    return bytes;
  }

  private addFile(file: DescFile): void {
    if (this.files.has(file.proto.name)) return;
    this.files.set(file.proto.name, file);
    for (const type of nestedTypes(file)) {
      this.symbols.set(type.typeName, file);
      switch (type.kind) {
        case "message":
          this.messages.add(type.typeName);
          for (const field of type.fields) this.symbols.set(`${type.typeName}.${field.name}`, file);
          for (const oneof of type.oneofs) this.symbols.set(`${type.typeName}.${oneof.name}`, file);
          break;
        case "enum": {
          // Enum values are scoped beside their enum, not inside it.
          const scope = type.typeName.slice(0, type.typeName.length - type.name.length);
          for (const value of type.values) this.symbols.set(`${scope}${value.name}`, file);
          break;
        }
        case "service":
          for (const method of type.methods) this.symbols.set(`${type.typeName}.${method.name}`, file);
          break;
        case "extension": {
          const extendee = type.extendee.typeName;
          this.extensions.set(`${extendee}/${type.number}`, file);
          this.extensionNumbers.set(extendee, [...(this.extensionNumbers.get(extendee) ?? []), type.number]);
          break;
        }
      }
    }
    for (const dependency of file.dependencies) this.addFile(dependency);
  }
}

function notFound(what: string): MessageResponse {
  return { case: "errorResponse", value: { errorCode: Code.NotFound, errorMessage: `${what} not found` } };
}

/** Both reflection services, describing `services` and themselves. */
export function createReflectionServices(services: readonly DescService[]): RpcService[] {
  const index = new ReflectionIndex([...services, ServerReflection, ServerReflectionV1alpha]);
  return [
    rpcService(ServerReflection, {
      async *serverReflectionInfo(requests) {
        const answer = index.session();
        for await (const request of requests) {
          yield { validHost: request.host, originalRequest: request, messageResponse: answer(request.messageRequest) };
        }
      },
    }),
    rpcService(ServerReflectionV1alpha, {
      async *serverReflectionInfo(requests) {
        const answer = index.session();
        for await (const request of requests) {
          yield { validHost: request.host, originalRequest: request, messageResponse: answer(request.messageRequest) };
        }
      },
    }),
  ];
}
