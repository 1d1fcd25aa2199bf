// Given the real meterd server, when clients/python/generate.sh generates the Python client with Debian's
// protoc and grpc_python_plugin and clients/python/example.py runs against it, then every step of the
// example gives the documented answer (see checkExampleOutput).
import path from "node:path";
import { clientSuite } from "./clients.js";
import { CLIENTS_DIR, PYTHON, run } from "./support.js";

const dir = path.join(CLIENTS_DIR, "python");

clientSuite({
  name: "Python",
  language: "python",
  generate: () => run(path.join(dir, "generate.sh"), []),
  runExample: (env) => run(PYTHON, [path.join(dir, "example.py")], env),
});
