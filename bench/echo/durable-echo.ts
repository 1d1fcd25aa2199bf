// The durable gRPC floor: the bare grpc-js echo server (grpc-echo.ts), whose Track handler also does the
// storage work meterd does for one Track (durable-work.ts): what is left between it and meterd's Track
// is meterd's service code. Run as its own process, so that its CPU and RSS are its own. Prints
// "port <n>". Environment: as durable-work.ts.
import * as grpc from "@grpc/grpc-js";
import { MeteringService, type TrackRequest, type TrackResponse } from "../../gen/meterd/v1/metering_pb.js";
import { methodDefinition } from "../../src/rpc/grpc/definitions.js";
import { closeDurable, durableTrack } from "./durable-work.js";

const method = MeteringService.method.track;
const server = new grpc.Server({ "grpc.max_receive_message_length": 4 * 1024 * 1024 });
server.addService(
  {
    track: methodDefinition(MeteringService, method),
  } as grpc.ServiceDefinition,
  {
    track: (call: grpc.ServerUnaryCall<TrackRequest, TrackResponse>, callback: grpc.sendUnaryData<TrackResponse>) => {
      durableTrack(call.request).then(
        (response) => callback(null, response),
        (error: unknown) => callback({ code: grpc.status.INTERNAL, details: String(error) }),
      );
    },
  },
);
server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, port) => {
  if (error) throw error;
  process.stdout.write(`port ${port}\n`);
});
process.on("SIGTERM", () => server.tryShutdown(() => void closeDurable().finally(() => process.exit(0))));
