// Given the real server, when a client that has no proto files asks either listener for its schema
// through gRPC server reflection (v1 and v1alpha), then buf curl lists and calls the methods, and a
// grpc-js and a connect-es reflection client get every file a service needs, with no key.
import { execFile } from "node:child_process";
import { create, createFileRegistry, fromBinary, toBinary } from "@bufbuild/protobuf";
import { type FileDescriptorProto, FileDescriptorProtoSchema, FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type ServerReflectionRequest,
  ServerReflectionRequestSchema,
  type ServerReflectionResponse,
  ServerReflectionResponseSchema,
} from "../../gen/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ServerReflectionV1alpha } from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import type { Server } from "../../src/server.js";
import { KEY, makeDataDir, removeDir, ROOT, Sessions, startMeterd } from "../server/harness.js";

let dataDir: string;
let server: Server;
const sessions = new Sessions();
const clients: grpc.Client[] = [];

beforeAll(async () => {
  dataDir = await makeDataDir();
  server = await startMeterd(dataDir);
}, 60_000);

afterAll(async () => {
  for (const client of clients) client.close();
  sessions.abortAll();
  await server?.close(500);
  await removeDir(dataDir);
});

/** `buf curl` without --schema: everything it knows comes from reflection. */
function bufCurl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile("node_modules/.bin/buf", ["curl", ...args], { cwd: ROOT, timeout: 20_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === "number" ? err.code : 1;
      resolve({ code, stdout, stderr });
    });
  });
}

const GRPC = ["--protocol", "grpc", "--http2-prior-knowledge"];

describe("buf curl with no proto files", () => {
  it.each([
    { name: "Connect listener, --protocol connect", port: () => server.httpPort, protocol: [] as string[] },
    { name: "Connect listener, --protocol grpcweb", port: () => server.httpPort, protocol: ["--protocol", "grpcweb"] },
    { name: "Connect listener, --protocol grpc (h2c)", port: () => server.httpPort, protocol: GRPC },
    { name: "grpc-js listener, --protocol grpc", port: () => server.grpcPort, protocol: GRPC },
  ])("lists the methods: $name", async ({ port, protocol }) => {
    for (const reflectProtocol of ["grpc-v1", "grpc-v1alpha"]) {
      const res = await bufCurl([...protocol, "--reflect-protocol", reflectProtocol, "--list-methods", `http://127.0.0.1:${port()}`]);
      expect(res.stderr).toBe("");
      expect(res.code).toBe(0);
      const methods = res.stdout.trim().split("\n");
      expect(methods).toContain("meterd.v1.MeteringService/Track");
      expect(methods).toContain("meterd.v1.CatalogService/UpsertCustomer");
      expect(methods).toContain("grpc.health.v1.Health/Check");
      expect(methods).toContain("grpc.reflection.v1.ServerReflection/ServerReflectionInfo");
      expect(methods).toContain("grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo");
    }
  });

  it("calls Track on the grpc-js listener", async () => {
    const body = JSON.stringify({ customer_id: "cus_reflect", feature_key: "api_calls", amount: 2, idempotency_key: "reflect-1" });
    const url = `http://127.0.0.1:${server.grpcPort}/meterd.v1.MeteringService/Track`;
    const res = await bufCurl([...GRPC, "-H", `Authorization: Bearer ${KEY}`, "-d", body, url]);
    expect(res.stderr).toBe("");
    expect(res.code).toBe(0);
    expect(JSON.parse(res.stdout)).toMatchObject({ decision: "DECISION_ALLOWED", usage: { featureKey: "api_calls", consumed: 2 } });
  });

  it("calls GetMetrics on the Connect listener", async () => {
    const body = JSON.stringify({ customer_id: "cus_reflect", feature_key: "api_calls" });
    const url = `http://127.0.0.1:${server.httpPort}/meterd.v1.MeteringService/GetMetrics`;
    const res = await bufCurl(["-H", `Authorization: Bearer ${KEY}`, "-d", body, url]);
    expect(res.stderr).toBe("");
    expect(res.code).toBe(0);
    expect(JSON.parse(res.stdout)).toMatchObject({ metrics: [{ featureKey: "api_calls", consumed: 2, limit: 1000 }] });
  });

  it("still needs a key for the methods it found", async () => {
    const url = `http://127.0.0.1:${server.grpcPort}/meterd.v1.MeteringService/GetMetrics`;
    const res = await bufCurl([...GRPC, "-d", '{"customer_id": "cus_reflect"}', url]);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(/"code": "unauthenticated"/);
  });
});

type Request = Parameters<typeof create<typeof ServerReflectionRequestSchema>>[1];

/**
 * A raw grpc-js client on ServerReflectionInfo: one stream, each request answered before the next is
 * sent. v1 and v1alpha messages are the same on the wire, so the v1 schemas encode both.
 */
function grpcJsReflect(port: number, version: "v1" | "v1alpha", requests: Request[]): Promise<ServerReflectionResponse[]> {
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  clients.push(client);
  const call = client.makeBidiStreamRequest(
    `/grpc.reflection.${version}.ServerReflection/ServerReflectionInfo`,
    (req: ServerReflectionRequest) => Buffer.from(toBinary(ServerReflectionRequestSchema, req)),
    (bytes: Buffer) => fromBinary(ServerReflectionResponseSchema, bytes),
  );
  return new Promise((resolve, reject) => {
    const responses: ServerReflectionResponse[] = [];
    const sendNext = (): void => {
      const next = requests[responses.length];
      if (next === undefined) call.end();
      else call.write(create(ServerReflectionRequestSchema, next));
    };
    call.on("data", (res: ServerReflectionResponse) => {
      responses.push(res);
      sendNext();
    });
    call.on("error", reject);
    call.on("end", () => resolve(responses));
    sendNext();
  });
}

function filesOf(res: ServerReflectionResponse | undefined): string[] {
  if (res?.messageResponse.case !== "fileDescriptorResponse") throw new Error(`not a file answer: ${res?.messageResponse.case}`);
  return res.messageResponse.value.fileDescriptorProto.map((bytes) => fromBinary(FileDescriptorProtoSchema, bytes).name);
}

/** The files as a registry, which fails on a file whose imports are missing. */
function registryOf(files: FileDescriptorProto[]) {
  const byName = new Map(files.map((file) => [file.name, file]));
  const ordered = new Set<FileDescriptorProto>(); // dependencies first, as a FileDescriptorSet must be
  const visit = (name: string): void => {
    const file = byName.get(name);
    if (file === undefined || ordered.has(file)) return;
    file.dependency.forEach(visit);
    ordered.add(file);
  };
  for (const file of files) visit(file.name);
  return createFileRegistry(create(FileDescriptorSetSchema, { file: [...ordered] }));
}

function errorOf(res: ServerReflectionResponse | undefined): { errorCode: number } | undefined {
  return res?.messageResponse.case === "errorResponse" ? res.messageResponse.value : undefined;
}

describe.each([
  { listener: "grpc-js listener", port: () => server.grpcPort },
  { listener: "Connect listener (h2c)", port: () => server.httpPort },
])("a grpc-js reflection client on the $listener", ({ port }) => {
  it.each(["v1", "v1alpha"] as const)("%s: lists the services and gets every file a service needs, each once", async (version) => {
    const [list, track, usage, again, topLevel] = await grpcJsReflect(port(), version, [
      { host: "meterd", messageRequest: { case: "listServices", value: "" } },
      { messageRequest: { case: "fileContainingSymbol", value: "meterd.v1.MeteringService.Track" } },
      { messageRequest: { case: "fileByFilename", value: "meterd/v1/usage.proto" } },
      { messageRequest: { case: "fileContainingSymbol", value: "meterd.v1.MeteringService" } },
      { messageRequest: { case: "fileContainingSymbol", value: "grpc.health.v1.HealthCheckResponse.SERVING" } },
    ]);

    expect(list?.validHost).toBe("meterd");
    expect(list?.originalRequest?.messageRequest.case).toBe("listServices");
    expect(list?.messageResponse.case === "listServicesResponse" && list.messageResponse.value.service.map((s) => s.name).sort()).toEqual([
      "grpc.health.v1.Health",
      "grpc.reflection.v1.ServerReflection",
      "grpc.reflection.v1alpha.ServerReflection",
      "meterd.v1.AuthService",
      "meterd.v1.CatalogService",
      "meterd.v1.MeteringService",
    ]);

    // The file first, then its dependencies: enough to build the service with no other file.
    const trackFiles = track?.messageResponse.case === "fileDescriptorResponse" ? track.messageResponse.value.fileDescriptorProto : [];
    expect(filesOf(track)[0]).toBe("meterd/v1/metering.proto");
    expect(filesOf(track)).toContain("google/protobuf/timestamp.proto");
    const registry = registryOf(trackFiles.map((bytes) => fromBinary(FileDescriptorProtoSchema, bytes)));
    const metering = registry.getService("meterd.v1.MeteringService");
    expect(metering?.methods.map((m) => m.name)).toContain("Track");
    expect(metering?.methods.find((m) => m.name === "Track")?.input.fields.map((f) => f.name)).toContain("idempotency_key");

    // A file already sent on this stream is sent again only when it is the one asked for.
    expect(filesOf(usage)).toEqual(["meterd/v1/usage.proto"]);
    expect(filesOf(again)).toEqual(["meterd/v1/metering.proto"]);
    expect(filesOf(topLevel)).toEqual(["grpc/health/v1/health.proto"]);
  });

  it.each(["v1", "v1alpha"] as const)("%s: answers NOT_FOUND where nothing applies, and the stream goes on", async (version) => {
    const answers = await grpcJsReflect(port(), version, [
      { messageRequest: { case: "fileContainingSymbol", value: "meterd.v1.NoSuchThing" } },
      { messageRequest: { case: "fileByFilename", value: "meterd/v1/nothing.proto" } },
      { messageRequest: { case: "fileContainingExtension", value: { containingType: "meterd.v1.TrackRequest", extensionNumber: 1000 } } },
      { messageRequest: { case: "allExtensionNumbersOfType", value: "meterd.v1.NoSuchMessage" } },
      { messageRequest: { case: "allExtensionNumbersOfType", value: "meterd.v1.TrackRequest" } },
    ]);
    expect(answers.slice(0, 4).map(errorOf)).toEqual(Array(4).fill(expect.objectContaining({ errorCode: grpc.status.NOT_FOUND })));
    expect(answers[4]?.messageResponse).toEqual({
      case: "allExtensionNumbersResponse",
      value: expect.objectContaining({ baseTypeName: "meterd.v1.TrackRequest", extensionNumber: [] }),
    });
  });
});

describe.each([
  { name: "gRPC to the grpc-js listener", transport: () => createGrpcTransport({ baseUrl: `http://127.0.0.1:${server.grpcPort}` }) },
  {
    name: "Connect (HTTP/2) to the Connect listener",
    transport: () => {
      const baseUrl = `http://127.0.0.1:${server.httpPort}`;
      return createConnectTransport({ baseUrl, httpVersion: "2", sessionManager: sessions.h2(baseUrl) });
    },
  },
])("a connect-es v1alpha client, $name", ({ transport }) => {
  it("finds the file of a method", async () => {
    const client = createClient(ServerReflectionV1alpha, transport());
    async function* requests() {
      yield { messageRequest: { case: "fileContainingSymbol" as const, value: "meterd.v1.CatalogService.UpsertCustomer" } };
    }
    const answers = [];
    for await (const res of client.serverReflectionInfo(requests())) answers.push(res);
    expect(answers).toHaveLength(1);
    const res = answers[0];
    const files = res?.messageResponse.case === "fileDescriptorResponse" ? res.messageResponse.value.fileDescriptorProto : [];
    expect(fromBinary(FileDescriptorProtoSchema, files[0] ?? new Uint8Array()).name).toBe("meterd/v1/catalog.proto");
  });
});
