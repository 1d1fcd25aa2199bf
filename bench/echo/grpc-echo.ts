// The gRPC floor: a bare @grpc/grpc-js server with the same message types and the same serializers as
// meterd's gRPC listener (protobuf-es fromBinary/toBinary), answering Track with echoResponse() and
// nothing else. Run as its own process, so that its CPU and RSS are its own. Prints "port <n>".
import { fromBinary, toBinary, type DescMessage } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { MeteringService, type TrackRequest, type TrackResponse } from "../../gen/meterd/v1/metering_pb.js";
import { echoResponse } from "./response.js";

function serializer(schema: DescMessage) {
  return (value: Parameters<typeof toBinary>[1]) => {
    const bytes = toBinary(schema, value);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

const track = MeteringService.method.track;
const server = new grpc.Server({ "grpc.max_receive_message_length": 4 * 1024 * 1024 });
server.addService(
  {
    track: {
      path: `/${MeteringService.typeName}/${track.name}`,
      requestStream: false,
      responseStream: false,
      requestSerialize: serializer(track.input),
      requestDeserialize: (bytes: Buffer) => fromBinary(track.input, bytes),
      responseSerialize: serializer(track.output),
      responseDeserialize: (bytes: Buffer) => fromBinary(track.output, bytes),
    },
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
