// A @grpc/grpc-js client that sends and receives raw bytes: the serializers are the identity, so a
// test can send any bytes at all (garbage, invalid UTF-8, oversized) as a request message, with any
// deadline, and encode or decode real messages itself with protobuf-es.
import * as grpc from "@grpc/grpc-js";

const identity = (bytes: Buffer): Buffer => bytes;

export interface UnaryOutcome {
  /** The gRPC status code; 0 (OK) with `response` set on success. */
  code: grpc.status;
  details: string;
  response?: Buffer;
}

export class RawGrpcClient {
  readonly client: grpc.Client;

  constructor(port: number) {
    this.client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  }

  /** One unary call of `path` ("/pkg.Service/Method"); resolves with its status, never rejects. */
  unary(path: string, request: Buffer, metadata: grpc.Metadata, deadline?: grpc.Deadline): Promise<UnaryOutcome> {
    return new Promise((resolve) => {
      this.client.makeUnaryRequest(
        path,
        identity,
        identity,
        request,
        metadata,
        deadline === undefined ? {} : { deadline },
        (err: grpc.ServiceError | null, response?: Buffer) => {
          if (err) resolve({ code: err.code, details: err.details });
          else resolve({ code: grpc.status.OK, details: "", ...(response === undefined ? {} : { response }) });
        },
      );
    });
  }

  /** A bidirectional stream of `path`, raw bytes both ways. */
  bidi(path: string, metadata: grpc.Metadata, deadline?: grpc.Deadline): grpc.ClientDuplexStream<Buffer, Buffer> {
    return this.client.makeBidiStreamRequest(path, identity, identity, metadata, deadline === undefined ? {} : { deadline });
  }

  /** A server stream of `path`, raw bytes both ways. */
  serverStream(path: string, request: Buffer, metadata: grpc.Metadata, deadline?: grpc.Deadline): grpc.ClientReadableStream<Buffer> {
    return this.client.makeServerStreamRequest(path, identity, identity, request, metadata, deadline === undefined ? {} : { deadline });
  }

  close(): void {
    this.client.close();
  }
}

/** Metadata with `authorization: Bearer <key>`. */
export function bearer(key: string): grpc.Metadata {
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${key}`);
  return metadata;
}
