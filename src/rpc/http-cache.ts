// Cache-Control for the Connect GET form of the read-only calls (Check, GetMetrics, ListEvents,
// QueryUsage and the catalogue reads). Every answer depends on the caller's key, so it is private. Most
// change with the next event, so a cache must ask again each time ("no-cache"). A ListEvents or
// QueryUsage range that ends before the backdating window can take no new event (a Track, a correction
// or a top-up may be dated at most that far back), so its answer may be kept for an hour.
import type { HandlerContext } from "@connectrpc/connect";

const FRESH = "private, no-cache";
const CLOSED = "private, max-age=3600";
/** Beyond the window: what a commit in flight at the window's edge may still take. */
const SLACK_MS = 60_000;

/** Sets Cache-Control on a GET's answer; `range` is the time range asked for, if any. */
export function setCacheControl(ctx: HandlerContext, range?: { to: Date | null; maxBackdateMs: number }, now = Date.now()): void {
  if (ctx.requestMethod !== "GET") return;
  const closed = range !== undefined && range.to !== null && range.to.getTime() < now - range.maxBackdateMs - SLACK_MS;
  ctx.responseHeader.set("cache-control", closed ? CLOSED : FRESH);
}
