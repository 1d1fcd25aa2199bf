// The Connect floor: a bare connect-node server (connectNodeAdapter on a cleartext HTTP/2 server) with
// the same message types, answering Track with echoResponse() and nothing else. Run as its own process,
// so that its CPU and RSS are its own. Prints "port <n>".
import http2 from "node:http2";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { MeteringService } from "../../gen/meterd/v1/metering_pb.js";
import { echoResponse } from "./response.js";

const handler = connectNodeAdapter({
  readMaxBytes: 4 * 1024 * 1024,
  routes: (router) => router.service(MeteringService, { track: (req) => echoResponse(req) }),
});
const server = http2.createServer(handler);
server.listen(0, "127.0.0.1", () => {
  const address = server.address();
  process.stdout.write(`port ${typeof address === "object" && address !== null ? address.port : 0}\n`);
});
process.on("SIGTERM", () => {
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
});
