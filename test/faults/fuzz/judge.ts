// What the fuzz test accepts as an answer, and what it expects of the ledger afterwards.
// An answer is a non-INTERNAL, non-UNKNOWN, non-5xx error, or a correct success. Every event sent
// in a well-formed message is booked as allowed, refused or indeterminate (the caller cannot know:
// a deadline passed, the call was cancelled); the ledger must then hold every allowed event, and no
// event that was refused.
import type {
  TrackBatchResponse,
  TrackResponse,
  TrackResult,
  TrackStreamResponse,
} from "../../../gen/meterd/v1/metering_pb.js";
import { Decision } from "../../../gen/meterd/v1/usage_pb.js";
import type { Answer, Sent } from "./send.js";
import type { SentEvent } from "./encode.js";

export type Fate = "allowed" | "refused" | "indeterminate";

export interface Booked extends SentEvent {
  fate: Fate;
  /** The event id of an allowed event. */
  eventId: string;
}

/** Codes that must never reach a caller here: server faults, and "retry" when nothing is down. */
const FAULT_CODES = new Set(["internal", "unknown", "data_loss", "unavailable"]);
/** Codes after which the caller cannot know whether the event was recorded. */
const INDETERMINATE_CODES = new Set(["deadline_exceeded", "canceled", "aborted", "no answer"]);
/** HTTP statuses of the Connect protocol that are not server faults: 501 unimplemented, 504 deadline. */
const ALLOWED_5XX: Record<number, string> = { 501: "unimplemented", 504: "deadline_exceeded" };
const READ_ONLY = new Set(["Check", "GetMetrics", "WatchUsage"]);

/** Bytes that can never be a message the server should accept as is. */
function mustFail(sent: Sent): string | null {
  const c = sent.fuzzCase;
  if (c.body.kind === "oversized") return "an oversized message";
  if (c.body.kind === "not-utf8") return "a string that is not UTF-8";
  if (c.wire.kind !== "raw") return null;
  const connectUnary = c.wire.protocol === "connect" && c.method !== "TrackStream" && c.method !== "WatchUsage";
  if (c.compression === "gzip-truncated" || c.compression === "gzip-corrupt") return `a ${c.compression} body`;
  if (c.compression === "unknown-encoding") return "an unknown encoding";
  // grpc-js reads a frame flagged as compressed, with no encoding named, as uncompressed: its own
  // leniency, and the message it reads is the one that was sent. connect-es refuses such frames.
  if (c.compression === "flag-without-encoding" && !connectUnary && c.wire.listener === "connect") return "a compressed flag without an encoding";
  return null;
}

function resultFate(result: TrackResult | undefined, index: number): { fate: Fate; eventId: string; problem: string | null } {
  const outcome = result?.outcome;
  if (outcome === undefined || outcome.case === undefined) return { fate: "indeterminate", eventId: "", problem: `result ${index} is missing` };
  if (outcome.case === "tracked") return trackedFate(outcome.value);
  const code = outcome.value.code;
  if (FAULT_CODES.has(code)) return { fate: "indeterminate", eventId: "", problem: `event ${index} answered ${code}: ${outcome.value.message}` };
  return { fate: INDETERMINATE_CODES.has(code) ? "indeterminate" : "refused", eventId: "", problem: null };
}

function trackedFate(r: TrackResponse): { fate: Fate; eventId: string; problem: string | null } {
  if (r.decision === Decision.ALLOWED) {
    return { fate: "allowed", eventId: r.eventId, problem: r.eventId === "" ? "ALLOWED without an event id" : null };
  }
  if (r.decision === Decision.DENIED) return { fate: "refused", eventId: "", problem: null };
  return { fate: "indeterminate", eventId: "", problem: `decision ${r.decision}` };
}

/**
 * Books the events of one call and returns what is wrong with its answer, or null. `book` receives
 * one entry per event sent in a well-formed message.
 */
export function judge(sent: Sent, answer: Answer, book: Booked[]): string | null {
  const c = sent.fuzzCase;
  const problems: string[] = [];
  const bidiOverHttp1 = c.method === "TrackStream" && (c.wire.kind === "raw" || c.wire.kind === "connect-client") && c.wire.http === "1.1";

  if (FAULT_CODES.has(answer.code)) problems.push(`answered ${answer.code}: ${answer.message}`);
  else if (answer.code === "no answer") problems.push(`no answer within the wait: ${answer.message}`);
  else if (/^(missing|grpc-status|http )/.test(answer.code) && !(bidiOverHttp1 && answer.httpStatus === 505)) {
    problems.push(`a malformed answer: ${answer.code} (HTTP ${answer.httpStatus})`);
  }
  if (answer.httpStatus !== null && answer.httpStatus >= 500) {
    const ok = ALLOWED_5XX[answer.httpStatus] === answer.code || (bidiOverHttp1 && answer.httpStatus === 505);
    if (!ok) problems.push(`HTTP ${answer.httpStatus} for ${answer.code}`);
  }
  const refusal = mustFail(sent);
  if (refusal !== null && answer.code === "ok") problems.push(`${refusal} was accepted${answer.stillOpen ? " (the stream stayed open)" : ""}`);

  if (answer.code === "ok" && (c.method === "Check" || c.method === "GetMetrics") && answer.responses.length !== 1) {
    problems.push(`a successful ${c.method} without a response message that decodes`);
  }

  // What each event became.
  const fates: Array<{ fate: Fate; eventId: string }> = sent.events.map(() => ({ fate: "indeterminate", eventId: "" }));
  if (answer.code === "ok" && !READ_ONLY.has(c.method)) {
    const responses = answer.responses;
    if (c.method === "Track") {
      const r = responses[0] as TrackResponse | undefined;
      if (r === undefined) problems.push("a successful Track without a response message");
      else {
        const f = trackedFate(r);
        fates[0] = f;
        if (f.problem !== null) problems.push(f.problem);
        if (f.fate !== "indeterminate" && r.usage?.featureKey !== sent.events[0]?.featureKey) {
          problems.push(`usage for ${JSON.stringify(r.usage?.featureKey)}, the event was for ${JSON.stringify(sent.events[0]?.featureKey)}`);
        }
      }
    } else {
      const results =
        c.method === "TrackBatch"
          ? ((responses[0] as TrackBatchResponse | undefined)?.results ?? null)
          : (responses as TrackStreamResponse[]).flatMap((r) => r.results);
      if (c.method === "TrackStream") {
        const sequences = (responses as TrackStreamResponse[]).map((r) => Number(r.sequence));
        if (sequences.some((s, i) => s !== i + 1)) problems.push(`TrackStream sequences ${sequences.join(",")}`);
      }
      if (results === null || results.length !== sent.events.length) {
        problems.push(`${results?.length ?? "no"} results for ${sent.events.length} events`);
      } else {
        results.forEach((result, i) => {
          const f = resultFate(result, i);
          fates[i] = f;
          if (f.problem !== null) problems.push(f.problem);
          if (result.outcome.case === "error" && !result.outcome.value.field.startsWith(`events[`)) {
            problems.push(`event error without an events[i] field: ${result.outcome.value.field}`);
          }
        });
      }
    }
  } else if (answer.code !== "ok") {
    // A TrackStream may have answered some requests before it failed: those results stand.
    const results = c.method === "TrackStream" ? (answer.responses as TrackStreamResponse[]).flatMap((r) => r.results) : [];
    const definitive = !INDETERMINATE_CODES.has(answer.code) && !FAULT_CODES.has(answer.code);
    sent.events.forEach((_, i) => {
      fates[i] = i < results.length ? resultFate(results[i], i) : { fate: definitive && results.length === 0 ? "refused" : "indeterminate", eventId: "" };
    });
  }

  sent.events.forEach((event, i) => {
    const { fate, eventId } = fates[i]!;
    if (event.invalid && fate === "allowed") problems.push(`event ${i} breaks an input rule but was ALLOWED: ${JSON.stringify(event)}`);
    book.push({ ...event, fate, eventId });
  });
  return problems.length === 0 ? null : problems.join("; ");
}

export interface LedgerRow {
  id: string;
  customer_id: string;
  idempotency_key: string | null;
}

/** What is wrong with the ledger given the book: allowed events missing, refused or unknown events present. */
export function ledgerProblems(book: Booked[], rows: LedgerRow[]): string[] {
  const problems: string[] = [];
  const ids = new Set(rows.map((r) => r.id));
  const byKey = new Map(book.filter((b) => b.key !== "").map((b) => [`${b.customerId}\u0000${b.key}`, b]));
  const allowedIds = new Set(book.filter((b) => b.fate === "allowed").map((b) => b.eventId));
  let keylessIndeterminate = book.filter((b) => b.key === "" && b.fate === "indeterminate").length;

  for (const b of book) {
    if (b.fate === "allowed" && !ids.has(b.eventId)) problems.push(`ALLOWED event ${b.eventId} (${b.customerId}, ${b.key}) is not in the ledger`);
  }
  for (const row of rows) {
    if (row.idempotency_key !== null) {
      const b = byKey.get(`${row.customer_id}\u0000${row.idempotency_key}`);
      if (b === undefined) problems.push(`ledger row ${row.id} (${row.customer_id}, ${row.idempotency_key}) was never sent`);
      else if (b.fate === "refused") problems.push(`ledger row ${row.id} holds an event answered as refused: ${JSON.stringify(b)}`);
      else if (b.fate === "allowed" && b.eventId !== row.id) problems.push(`ledger row ${row.id} has another id than the ALLOWED answer ${b.eventId}`);
    } else if (!allowedIds.has(row.id)) {
      if (keylessIndeterminate > 0) keylessIndeterminate--;
      else problems.push(`ledger row ${row.id} (${row.customer_id}, no key) matches no ALLOWED answer`);
    }
  }
  return problems;
}
