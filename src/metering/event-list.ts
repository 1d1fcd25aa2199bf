// ListEvents: the checks on a listing request and its page token. The token is opaque to callers: it
// holds the last position of the previous page and a digest of the filters it was made for, so that a
// token sent with other filters is refused instead of answering a page of another listing.
import { createHash } from "node:crypto";
import type { Catalog } from "../catalog/catalog.js";
import type { EventKind, EventPosition, EventQuery, Ledger, StoredEvent } from "../ledger/ledger.js";
import { invalid } from "./errors.js";
import { checkCustomerId, checkIdempotencyKey } from "./validate.js";

export const DEFAULT_PAGE_SIZE = 100;
export const MAX_PAGE_SIZE = 1000;

export interface EventListing {
  customerId: string;
  /** "": every feature (and top-ups), unless `onlyFeatures` narrows it. */
  featureKey: string;
  /** The features a caller may see (a customer token's); null: all of them. */
  onlyFeatures: readonly string[] | null;
  from: Date | null;
  to: Date | null;
  kinds: readonly EventKind[];
  idempotencyKey: string;
  newestFirst: boolean;
  /** 0: DEFAULT_PAGE_SIZE. */
  pageSize: number;
  pageToken: string;
}

export interface EventPage {
  events: StoredEvent[];
  /** "" on the last page. */
  nextPageToken: string;
}

const TOKEN_VERSION = 1;

export async function listEvents(ledger: Ledger, catalog: Catalog, listing: EventListing): Promise<EventPage> {
  const query = queryOf(catalog, listing);
  if (query.featureKeys?.length === 0) return { events: [], nextPageToken: "" };
  const digest = digestOf(query);
  const after = listing.pageToken === "" ? null : positionOf(listing.pageToken, digest);
  const { events, next } = await ledger.queryEvents({ ...query, after });
  return { events, nextPageToken: next === null ? "" : tokenOf(next, digest) };
}

/** The checked request as a ledger query, from the first page. */
function queryOf(catalog: Catalog, l: EventListing): EventQuery {
  checkCustomerId(l.customerId);
  if (l.featureKey !== "" && !catalog.feature(l.featureKey)) {
    throw invalid("feature_key", `must name a known feature, "${l.featureKey}" is not one`, "UNKNOWN_FEATURE");
  }
  if (l.from !== null && l.to !== null && !(l.from.getTime() < l.to.getTime())) {
    throw invalid("to", "must be after from", "RANGE_EMPTY");
  }
  if (!Number.isInteger(l.pageSize) || l.pageSize < 0 || l.pageSize > MAX_PAGE_SIZE) {
    throw invalid("page_size", `must be 1 to ${MAX_PAGE_SIZE} (0 means ${DEFAULT_PAGE_SIZE})`, "PAGE_SIZE_OUT_OF_RANGE");
  }
  checkIdempotencyKey(l.idempotencyKey);
  let featureKeys: readonly string[] | null = l.featureKey === "" ? l.onlyFeatures : [l.featureKey];
  if (l.featureKey !== "" && l.onlyFeatures !== null && !l.onlyFeatures.includes(l.featureKey)) featureKeys = [];
  return {
    customerId: l.customerId,
    featureKeys,
    from: l.from,
    to: l.to,
    kinds: [...new Set(l.kinds)].sort(),
    idempotencyKey: l.idempotencyKey === "" ? null : l.idempotencyKey,
    newestFirst: l.newestFirst,
    after: null,
    limit: l.pageSize === 0 ? DEFAULT_PAGE_SIZE : l.pageSize,
  };
}

/** What a token is bound to: every filter and the order, not the page size (a caller may change it). */
function digestOf(q: EventQuery): string {
  const filters = [q.customerId, q.featureKeys, q.from?.getTime() ?? null, q.to?.getTime() ?? null, q.kinds, q.idempotencyKey, q.newestFirst];
  return createHash("sha256").update(JSON.stringify(filters)).digest("base64url").slice(0, 16);
}

function tokenOf(position: EventPosition, digest: string): string {
  return Buffer.from(JSON.stringify([TOKEN_VERSION, position.occurredAtMicros, position.seq, digest])).toString("base64url");
}

function positionOf(token: string, digest: string): EventPosition {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    parsed = null;
  }
  if (!Array.isArray(parsed) || parsed[0] !== TOKEN_VERSION || !isInteger(parsed[1]) || !isInteger(parsed[2])) {
    throw invalid("page_token", "must be a next_page_token that ListEvents returned", "PAGE_TOKEN_INVALID");
  }
  if (parsed[3] !== digest) {
    throw invalid("page_token", "must be sent with the same filters and order as the call that returned it", "PAGE_TOKEN_MISMATCH");
  }
  return { occurredAtMicros: parsed[1], seq: parsed[2] };
}

function isInteger(value: unknown): value is string {
  return typeof value === "string" && /^-?\d{1,19}$/.test(value);
}
