// The durable Connect floor: the bare connect-node echo server (connect-echo.ts), whose Track handler also
// does the storage work meterd does for one Track (durable-work.ts): what is left between it and
// meterd's Track over Connect is meterd's service code. Run as its own process, so that its CPU and RSS
// are its own. Prints "port <n>". Environment: as durable-work.ts.
import http2 from "node:http2";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { MeteringService } from "../../gen/meterd/v1/metering_pb.js";
import { closeDurable, durableTrack } from "./durable-work.js";

const handler = connectNodeAdapter({
  readMaxBytes: 4 * 1024 * 1024,
  routes: (router) => router.service(MeteringService, { track: (req) => durableTrack(req) }),
});
const server = http2.createServer(handler);
server.listen(0, "127.0.0.1", () => {
  const address = server.address();
  process.stdout.write(`port ${typeof address === "object" && address !== null ? address.port : 0}\n`);
});
process.on("SIGTERM", () => {
  server.close(() => void closeDurable().finally(() => process.exit(0)));
  setTimeout(() => process.exit(0), 2000).unref();
});
