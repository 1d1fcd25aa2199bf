// The gRPC floor: a bare @grpc/grpc-js server with the same message types and the same serializers as
// meterd's gRPC listener (its methodDefinition: codecs compiled from the protobuf-es descriptors),
// answering Track with echoResponse() and nothing else. Run as its own process, so that its CPU and RSS
// are its own. Prints "port <n>".
import * as grpc from "@grpc/grpc-js";
import { MeteringService, type TrackRequest, type TrackResponse } from "../../gen/meterd/v1/metering_pb.js";
import { methodDefinition } from "../../src/rpc/grpc/definitions.js";
import { echoResponse } from "./response.js";

const track = MeteringService.method.track;
const server = new grpc.Server({ "grpc.max_receive_message_length": 4 * 1024 * 1024 });
server.addService(
  {
    track: methodDefinition(MeteringService, track),
  } as grpc.ServiceDefinition,
  {
    track: (call: grpc.ServerUnaryCall<TrackRequest, TrackResponse>, callback: grpc.sendUnaryData<TrackResponse>) => {
      callback(null, echoResponse(call.request));
    },
  },
);
server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, port) => {
  if (error) throw error;
  process.stdout.write(`port ${port}\n`);
});
process.on("SIGTERM", () => server.tryShutdown(() => process.exit(0)));
