// Given a request's headers, when the Connect listener clamps its timeout, then the header connect-es
// will read is min(client timeout, cap) in the protocol's own format, within what a Node timer holds;
// a header that is not a timeout at all is left for connect-es to refuse.
import type { IncomingHttpHeaders } from "node:http";
import { describe, expect, it } from "vitest";
import { clampTimeout, MAX_TIMER_MS } from "../../src/rpc/connect-timeout.js";

function clamped(headers: IncomingHttpHeaders, capMs: number, defaultToCap = false): IncomingHttpHeaders {
  const copy = { ...headers };
  clampTimeout(copy, capMs, defaultToCap);
  return copy;
}

const connect = (value?: string) => ({ "content-type": "application/connect+json", ...(value === undefined ? {} : { "connect-timeout-ms": value }) });
const grpc = (value?: string) => ({ "content-type": "application/grpc-web+proto", ...(value === undefined ? {} : { "grpc-timeout": value }) });

describe("streams: capped at what a Node timer holds", () => {
  it.each([
    ["9999999999", String(MAX_TIMER_MS)],
    ["2147483648", String(MAX_TIMER_MS)],
    ["99999999999", String(MAX_TIMER_MS)],
    [String(2 ** 40), String(MAX_TIMER_MS)],
    ["00000000000000000005", "5"],
    ["2147483647", "2147483647"],
    ["0", "0"],
    ["1500", "1500"],
  ])("connect-timeout-ms %s becomes %s", (value, expected) => {
    expect(clamped(connect(value), MAX_TIMER_MS)["connect-timeout-ms"]).toBe(expected);
  });

  it.each([
    ["8760H", "2147483S"],
    ["99999999H", "2147483S"],
    ["2592000S", "2147483S"],
    ["596H", "596H"],
    ["1n", "1n"],
  ])("grpc-timeout %s becomes %s", (value, expected) => {
    expect(clamped(grpc(value), MAX_TIMER_MS)["grpc-timeout"]).toBe(expected);
  });

  it("a stream without a timeout keeps none", () => {
    expect(clamped(connect(), MAX_TIMER_MS)).toEqual(connect());
    expect(clamped(grpc(), MAX_TIMER_MS)).toEqual(grpc());
  });
});

describe("unary calls: capped at METERD_MAX_TIMEOUT_MS, also without a timeout", () => {
  const unary = (value?: string) => ({ "content-type": "application/json", ...(value === undefined ? {} : { "connect-timeout-ms": value }) });
  it("caps long and missing timeouts, keeps short ones", () => {
    expect(clamped(unary("9999999999"), 30_000, true)["connect-timeout-ms"]).toBe("30000");
    expect(clamped(unary(), 30_000, true)["connect-timeout-ms"]).toBe("30000");
    expect(clamped(unary("250"), 30_000, true)["connect-timeout-ms"]).toBe("250");
    expect(clamped(grpc("1H"), 30_000, true)["grpc-timeout"]).toBe("30000m");
    expect(clamped(grpc(), 30_000, true)["grpc-timeout"]).toBe("30000m");
  });
});

describe("values that are not timeouts are left for connect-es to refuse", () => {
  it.each([["-5"], ["1.5"], ["ten"], [""]])("connect-timeout-ms %j", (value) => {
    expect(clamped(connect(value), MAX_TIMER_MS)["connect-timeout-ms"]).toBe(value);
  });

  // The gRPC spec allows 8 digits; the grpc-js listener refuses more, and so does this one.
  it.each([["123456789m"], ["5x"], ["H"]])("grpc-timeout %j", (value) => {
    expect(clamped(grpc(value), MAX_TIMER_MS)["grpc-timeout"]).toBe(value);
  });
});
