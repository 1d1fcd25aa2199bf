// Given the real meterd server, when clients/go/generate.sh generates the Go client with Debian's protoc,
// protoc-gen-go and protoc-gen-go-grpc and clients/go/run.sh runs the example in GOPATH mode against it,
// then every step of the example gives the documented answer (see checkExampleOutput).
import path from "node:path";
import { clientSuite } from "./clients.js";
import { CLIENTS_DIR, run } from "./support.js";

const dir = path.join(CLIENTS_DIR, "go");

clientSuite({
  name: "Go",
  language: "go",
  generate: () => run(path.join(dir, "generate.sh"), []),
  runExample: (env) => run(path.join(dir, "run.sh"), [], env),
});
