// The real clients the harness drives load with: @grpc/grpc-js (with the serializers of meterd's own gRPC
// listener: codecs compiled from the protobuf-es descriptors) and connect-node over HTTP/2 in binary format.
import { create, type DescMessage, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { deserializer as meterdDeserializer, serializer as meterdSerializer } from "../../src/rpc/grpc/definitions.js";
import { type Client as ConnectClient, createClient } from "@connectrpc/connect";
import { createConnectTransport, Http2SessionManager } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import {
  MeteringService,
  TrackRequestSchema,
  type TrackRequest,
  type TrackResult,
  type TrackStreamRequest,
  TrackStreamRequestSchema,
  type TrackStreamResponse,
} from "../../gen/meterd/v1/metering_pb.js";
import { Decision } from "../../gen/meterd/v1/usage_pb.js";

export const BENCH_KEY = "sk_bench_0123456789abcdef0123456789abcdef";

/** meterd's own codec (src/rpc/grpc/definitions.ts), so that the client costs what a lean client costs. */
function serializer<D extends DescMessage>(schema: D): (value: MessageShape<D>) => Buffer {
  return meterdSerializer(schema) as (value: MessageShape<D>) => Buffer;
}

function deserializer<D extends DescMessage>(schema: D): (bytes: Buffer) => MessageShape<D> {
  return meterdDeserializer(schema) as (bytes: Buffer) => MessageShape<D>;
}

type UnaryMethod = {
  name: string;
  input: DescMessage;
  output: DescMessage;
  parent: { typeName: string };
};

/** A grpc-js channel to one address; `unary` calls any unary method of a protobuf-es service. */
export class GrpcClient {
  readonly client: grpc.Client;
  private readonly metadata: grpc.Metadata;
  private readonly codecs = new Map<string, { path: string; ser: (v: never) => Buffer; de: (b: Buffer) => unknown }>();

  constructor(address: string, key: string | null = BENCH_KEY) {
    this.client = new grpc.Client(address, grpc.credentials.createInsecure(), {
      "grpc.max_receive_message_length": 64 * 1024 * 1024,
      "grpc.max_send_message_length": 64 * 1024 * 1024,
    });
    this.metadata = new grpc.Metadata();
    if (key !== null) this.metadata.set("authorization", `Bearer ${key}`);
  }

  private codec(method: UnaryMethod) {
    let codec = this.codecs.get(method.name);
    if (!codec) {
      codec = {
        path: `/${method.parent.typeName}/${method.name}`,
        ser: serializer(method.input) as (v: never) => Buffer,
        de: deserializer(method.output),
      };
      this.codecs.set(method.name, codec);
    }
    return codec;
  }

  unary<M extends UnaryMethod>(method: M, request: MessageShape<M["input"]>): Promise<MessageShape<M["output"]>> {
    const { path, ser, de } = this.codec(method);
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(path, ser as (v: unknown) => Buffer, de, request, this.metadata, (error, value) => {
        if (error) reject(error);
        else resolve(value as MessageShape<M["output"]>);
      });
    });
  }

  /** A TrackStream call: write requests, read acknowledgements. */
  trackStream(): grpc.ClientDuplexStream<TrackStreamRequest, TrackStreamResponse> {
    const method = MeteringService.method.trackStream;
    return this.client.makeBidiStreamRequest(
      `/${MeteringService.typeName}/${method.name}`,
      serializer(TrackStreamRequestSchema),
      deserializer(method.output),
      this.metadata,
    );
  }

  close(): void {
    this.client.close();
  }
}

/** A connect-node client of MeteringService over HTTP/2 (h2c), binary protobuf. */
export function connectClient(baseUrl: string, key: string | null = BENCH_KEY): {
  client: ConnectClient<typeof MeteringService>;
  close(): void;
} {
  const sessionManager = new Http2SessionManager(baseUrl);
  const transport = createConnectTransport({
    baseUrl,
    httpVersion: "2",
    useBinaryFormat: true,
    sessionManager,
    interceptors:
      key === null
        ? []
        : [
            (next) => (req) => {
              req.header.set("authorization", `Bearer ${key}`);
              return next(req);
            },
          ],
  });
  return { client: createClient(MeteringService, transport), close: () => sessionManager.abort() };
}

/**
 * The bench's events: `customers` customers (bench_c00000... by default), api_calls, amount 1, a unique idempotency
 * key, one property. Spread round-robin, so that no customer is hot and none nears a limit.
 */
export class EventSource {
  private n = 0;
  private batches = 0;

  constructor(
    readonly runId: string,
    readonly customers: number,
    readonly customerPrefix = "bench_c",
  ) {}

  customerId(i: number): string {
    return `${this.customerPrefix}${String(i).padStart(5, "0")}`;
  }

  next(tag: string): TrackRequest {
    const n = this.n++;
    return create(TrackRequestSchema, {
      customerId: this.customerId(n % this.customers),
      featureKey: "api_calls",
      amount: 1,
      idempotencyKey: `${this.runId}-${tag}-${n}`,
      properties: { region: "eu-west" },
    });
  }

  /**
   * A batch of `size` events over `perBatchCustomers` consecutive customers (size / perBatchCustomers events
   * each), as an ingestion pipeline's batch of many customers' events would be.
   */
  batch(tag: string, size: number, perBatchCustomers: number): TrackRequest[] {
    const first = this.batches++ * perBatchCustomers;
    const base = this.n;
    this.n += size;
    const out = new Array<TrackRequest>(size);
    for (let i = 0; i < size; i++) {
      out[i] = create(TrackRequestSchema, {
        customerId: this.customerId((first + (i % perBatchCustomers)) % this.customers),
        featureKey: "api_calls",
        amount: 1,
        idempotencyKey: `${this.runId}-${tag}-${base + i}`,
        properties: { region: "eu-west" },
      });
    }
    return out;
  }
}

/** Events of a batch or stream answer that were counted (ALLOWED); the rest are denials or errors. */
export function allowedIn(results: TrackResult[]): { allowed: number; other: number; firstProblem: string | null } {
  let allowed = 0;
  let firstProblem: string | null = null;
  for (const r of results) {
    if (r.outcome.case === "tracked" && r.outcome.value.decision === Decision.ALLOWED) allowed++;
    else firstProblem ??= r.outcome.case === "error" ? `${r.outcome.value.reason}: ${r.outcome.value.message}` : "denied";
  }
  return { allowed, other: results.length - allowed, firstProblem };
}

export { create, type MessageInitShape };
