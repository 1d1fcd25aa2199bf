// Event ids are UUIDv7: valid, unique, and in time order across milliseconds.
import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { newEventId } from "../../src/metering/event-id.js";

const V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe("event ids", () => {
  it("are UUIDv7 strings that carry the time they were made, and never repeat", () => {
    const before = Date.now();
    const ids = Array.from({ length: 100_000 }, () => newEventId());
    const after = Date.now();
    for (const id of ids.slice(0, 1000)) expect(id).toMatch(V7);
    expect(new Set(ids).size).toBe(ids.length);
    const ms = (id: string) => Number.parseInt(id.slice(0, 8) + id.slice(9, 13), 16);
    expect(ms(ids[0]!)).toBeGreaterThanOrEqual(before);
    expect(ms(ids.at(-1)!)).toBeLessThanOrEqual(after);
  });

  it("sort after the ids of earlier milliseconds", async () => {
    const first = newEventId();
    await sleep(5);
    const second = newEventId();
    expect(second > first).toBe(true);
    expect(second.slice(0, 13) > first.slice(0, 13)).toBe(true);
  });
});
