// Runs the client programs of clients/<language>/ against a real meterd server. Outside CI a machine
// without the Debian toolchain skips them, naming what is missing; in CI (CI set) a missing toolchain
// fails them, since .ci/run installs it.
import { execFile } from "node:child_process";
import { accessSync, constants, existsSync } from "node:fs";
import path from "node:path";
import { expect } from "vitest";
import { ROOT } from "../server/harness.js";

export const CLIENTS_DIR = path.join(ROOT, "clients");
export const IN_CI = (process.env["CI"] ?? "") !== "" && process.env["CI"] !== "false";
export const PYTHON = "/usr/bin/python3";
const GOCODE = "/usr/share/gocode/src";

function onPath(command: string): boolean {
  return (process.env["PATH"] ?? "").split(path.delimiter).some((dir) => {
    try {
      accessSync(path.join(dir, command), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** What a language's client needs, as [what is checked, the Debian package that provides it]. */
const NEEDS: Record<"python" | "go", [() => boolean, string][]> = {
  python: [
    [() => onPath("protoc"), "protobuf-compiler"],
    [() => onPath("grpc_python_plugin"), "protobuf-compiler-grpc"],
    [() => existsSync(PYTHON), "python3"],
    [() => existsSync("/usr/lib/python3/dist-packages/grpc"), "python3-grpcio"],
    [() => existsSync("/usr/lib/python3/dist-packages/google/protobuf"), "python3-protobuf"],
  ],
  go: [
    [() => onPath("protoc"), "protobuf-compiler"],
    [() => onPath("go"), "golang-go"],
    [() => onPath("protoc-gen-go"), "protoc-gen-go"],
    [() => onPath("protoc-gen-go-grpc"), "protoc-gen-go-grpc"],
    [() => existsSync(path.join(GOCODE, "google.golang.org/grpc")), "golang-google-grpc-dev"],
    [() => existsSync(path.join(GOCODE, "google.golang.org/protobuf")), "golang-google-protobuf-dev"],
    [() => existsSync(path.join(GOCODE, "github.com/golang/protobuf/ptypes")), "golang-github-golang-protobuf-1-5-dev"],
  ],
};

/** The Debian packages a language's client is missing on this machine. */
export function missingPackages(language: keyof typeof NEEDS): string[] {
  return NEEDS[language].filter(([present]) => !present()).map(([, pkg]) => pkg);
}

export interface Output {
  stdout: string;
  stderr: string;
}

/** Runs a command to completion; rejects with its output when it exits non-zero. */
export function run(file: string, args: string[], env: Record<string, string> = {}, timeoutMs = 120_000): Promise<Output> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { env: { ...process.env, ...env }, timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${file} ${args.join(" ")} failed: ${err.message}\n${stdout}\n${stderr}`));
      else resolve({ stdout, stderr });
    });
  });
}

/** The example programs' output: one `label: rest` line per step, by label. */
export function parseLines(stdout: string): Map<string, string> {
  const lines = new Map<string, string>();
  for (const line of stdout.split("\n")) {
    const at = line.indexOf(": ");
    if (at > 0) lines.set(line.slice(0, at), line.slice(at + 2));
  }
  return lines;
}

/** `k=v k=v` pairs of a line; the last value (a rule) may contain spaces. */
export function fields(line: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (line === undefined) return out;
  const re = /(\w+)=(.*?)(?= \w+=|$)/g;
  for (const m of line.matchAll(re)) out[m[1] as string] = m[2] as string;
  return out;
}

/**
 * Given one customer's run of an example program, then: the track is counted with an event id, its
 * retry is a duplicate with the same id, the batch counts its two good events and refuses the third
 * alone, GetMetrics shows api_calls at 3 of 1000 and storage_gb at 0.5, and the refused Track carried
 * an ErrorDetail (reason, field, rule) in grpc-status-details-bin.
 */
export function checkExampleOutput(stdout: string): void {
  const lines = parseLines(stdout);
  const track = fields(lines.get("track"));
  const retry = fields(lines.get("retry"));
  expect(track["event_id"] ?? "").toMatch(/^\S+$/);
  expect(track).toEqual({ event_id: track["event_id"], decision: "DECISION_ALLOWED", duplicate: "false", consumed: "1" });
  expect(retry).toEqual({ event_id: track["event_id"], decision: "DECISION_ALLOWED", duplicate: "true", consumed: "1" });
  expect(fields(lines.get("batch[0]"))).toEqual({ decision: "DECISION_ALLOWED", duplicate: "false" });
  expect(fields(lines.get("batch[1]"))).toEqual({ decision: "DECISION_ALLOWED", duplicate: "false" });
  expect(lines.get("batch[2]")).toEqual("error code=invalid_argument field=events[2].feature_key reason=UNKNOWN_FEATURE");
  expect(fields(lines.get("metric[api_calls]"))).toEqual({ consumed: "3", limit: "1000" });
  expect(fields(lines.get("metric[storage_gb]"))).toEqual({ consumed: "0.5", limit: "100" });
  expect(fields(lines.get("refused"))).toEqual({
    code: "INVALID_ARGUMENT",
    reason: "UNKNOWN_FEATURE",
    field: "feature_key",
    rule: 'must name a known feature, "no_such_feature" is not one',
  });
}
