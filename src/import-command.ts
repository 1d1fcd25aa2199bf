// `meterd import`: a backfill from another system (or a file of `meterd export`), sent over the network
// to a running meterd, so that it works against any deployment and goes through the same rules as
// TrackBatch: limits, credits, the backdating window (top-ups keep their time too). Idempotent by key: an event keeps its
// idempotency key, or gets "import:<id>" when it has none, so importing the same file twice counts
// nothing twice. What meterd refuses or denies is written to a rejects file with the reason.
import { createReadStream, createWriteStream, statSync } from "node:fs";
import { once } from "node:events";
import { finished } from "node:stream/promises";
import { createInterface } from "node:readline";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { parse } from "csv-parse";
import { CatalogService, type TopUpCreditsRequestSchema } from "../gen/meterd/v1/catalog_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { EventKind, MeteringService, type TrackRequestSchema } from "../gen/meterd/v1/metering_pb.js";
import { Decision, DenyReason } from "../gen/meterd/v1/usage_pb.js";
import { progressBar } from "./progress.js";

export interface ImportOptions {
  file: string | undefined;
  format: string | undefined;
  url: string;
  key: string | undefined;
  rejects: string | undefined;
}

/** Events per TrackBatch call: TrackBatch's own maximum. */
const BATCH = 1000;

interface Line {
  /** 1-based record number in the file. */
  at: number;
  record: Record<string, unknown>;
}

class UsageError extends Error {}

type TrackInit = MessageInitShape<typeof TrackRequestSchema>;

/** The records of the file, each with its number, and the bytes read so far (for the progress bar). */
async function* recordsOf(file: string, format: "csv" | "ndjson", onBytes: (n: number) => void): AsyncGenerator<Line> {
  const input = createReadStream(file);
  input.on("data", (chunk) => onBytes(chunk.length));
  let at = 0;
  if (format === "csv") {
    for await (const record of input.pipe(parse({ columns: true, skip_empty_lines: true, bom: true }))) {
      const r = record as Record<string, string>;
      at++;
      yield { at, record: { ...r, properties: r["properties"] === undefined || r["properties"] === "" ? {} : safeJson(r["properties"]) } };
    }
    return;
  }
  for await (const text of createInterface({ input, crlfDelay: Infinity })) {
    if (text.trim() === "") continue;
    at++;
    yield { at, record: safeJson(text) as Record<string, unknown> };
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return { __unparsable: text };
  }
}

/** The kind a Track names: a file that gives none lets meterd decide by the amount's sign. */
const kinds = new Map([
  ["", EventKind.UNSPECIFIED],
  ["track", EventKind.TRACK],
  ["adjustment", EventKind.ADJUSTMENT],
  ["set", EventKind.SET],
]);

const str = (v: unknown): string => (typeof v === "string" ? v : v === null || v === undefined ? "" : String(v));

/** The call an exported event becomes, or why it cannot be sent. */
function requestOf(r: Record<string, unknown>): { track: TrackInit } | { topUp: MessageInitShape<typeof TopUpCreditsRequestSchema> } | { problem: string } {
  if ("__unparsable" in r) return { problem: "not a JSON object (NDJSON) or not a record (CSV)" };
  const kind = str(r["kind"]);
  const key = str(r["idempotency_key"]) || (str(r["id"]) === "" ? "" : `import:${str(r["id"])}`);
  if (key === "") return { problem: "an event needs an idempotency_key or an id, so that importing it twice counts it once" };
  if (!kinds.has(kind) && kind !== "topup") return { problem: `kind must be track, adjustment, set or topup, got "${kind}"` };
  const at = str(r["occurred_at"]);
  const ms = at === "" ? null : Date.parse(at);
  if (ms !== null && Number.isNaN(ms)) return { problem: `occurred_at must be an ISO 8601 time, got "${at}"` };
  const properties = r["properties"];
  if (kind === "topup") {
    const description = typeof properties === "object" && properties !== null ? str((properties as Record<string, unknown>)["description"]) : "";
    return {
      topUp: { customerId: str(r["customer_id"]), amount: Number(str(r["credits"])), idempotencyKey: key, description, ...(ms === null ? {} : { timestamp: timestampFromMs(ms) }) },
    };
  }
  return {
    track: {
      customerId: str(r["customer_id"]),
      featureKey: str(r["feature_key"]),
      amount: r["amount"] === undefined || r["amount"] === "" ? undefined : Number(str(r["amount"])),
      // A set event's amount is the delta it recorded: meterd records it again as a set of that delta.
      kind: kinds.get(kind)!,
      idempotencyKey: key,
      ...(ms === null ? {} : { timestamp: timestampFromMs(ms) }),
      properties: typeof properties === "object" && properties !== null ? Object.fromEntries(Object.entries(properties).map(([k, v]) => [k, str(v)])) : {},
    },
  };
}

export async function importCommand(o: ImportOptions): Promise<number> {
  let format: "csv" | "ndjson";
  try {
    if (o.file === undefined) throw new UsageError("name the file to import: meterd import FILE --url URL --key KEY");
    const f = o.format ?? (o.file.endsWith(".csv") ? "csv" : "ndjson");
    if (f !== "csv" && f !== "ndjson") throw new UsageError(`--format must be csv or ndjson, got "${f}"`);
    format = f;
    if (o.key === undefined || o.key === "") throw new UsageError("--key (or METERD_KEY) must give a secret key of the meterd to import into");
    statSync(o.file);
  } catch (error) {
    if (!(error instanceof UsageError) && (error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    process.stderr.write(`meterd import: ${error instanceof UsageError ? error.message : `cannot read ${o.file}`}\n`);
    return 2;
  }
  const file = o.file!;
  const headers = { authorization: `Bearer ${o.key}` };
  const transport = createConnectTransport({ baseUrl: o.url, httpVersion: "1.1", useBinaryFormat: true });
  const metering = createClient(MeteringService, transport);
  const catalog = createClient(CatalogService, transport);
  const rejectsPath = o.rejects ?? `${file}.rejects.ndjson`;
  const rejects = createWriteStream(rejectsPath);
  const counts = { imported: 0, already: 0, rejected: 0 };
  const reject = async (line: Line, reason: string, message: string): Promise<void> => {
    counts.rejected++;
    if (!rejects.write(`${JSON.stringify({ line: line.at, reason, message, event: line.record })}\n`)) await once(rejects, "drain");
  };

  const bar = progressBar("import", "bytes", "{imported} imported | {already} already there | {rejected} rejected");
  bar.start(statSync(file).size, 0, counts);
  let pending: Array<{ line: Line; track: TrackInit }> = [];
  const flush = async (): Promise<void> => {
    if (pending.length === 0) return;
    const batch = pending;
    pending = [];
    const { results } = await metering.trackBatch({ events: batch.map((p) => p.track) }, { headers });
    for (const [i, result] of results.entries()) {
      const line = batch[i]!.line;
      const outcome = result.outcome;
      if (outcome.case === "tracked" && outcome.value.decision === Decision.ALLOWED) {
        if (outcome.value.duplicate) counts.already++;
        else counts.imported++;
      } else if (outcome.case === "tracked") {
        await reject(line, `DENIED_${DenyReason[outcome.value.denyReason]}`, "meterd denied the event (its limit, credits or entitlement)");
      } else {
        await reject(line, outcome.value?.reason ?? "UNKNOWN", outcome.value?.message ?? "no result");
      }
    }
  };

  try {
    for await (const line of recordsOf(file, format, (n) => bar.increment(n, counts))) {
      const req = requestOf(line.record);
      if ("problem" in req) {
        await reject(line, "NOT_AN_EVENT", req.problem);
      } else if ("topUp" in req) {
        try {
          const res = await catalog.topUpCredits(req.topUp, { headers });
          if (res.duplicate) counts.already++;
          else counts.imported++;
        } catch (error) {
          await reject(line, "TOP_UP_REFUSED", (error as Error).message);
        }
      } else {
        pending.push({ line, track: req.track });
        if (pending.length >= BATCH) await flush();
      }
    }
    await flush();
  } finally {
    bar.update(statSync(file).size, counts);
    bar.stop();
    rejects.end();
    await finished(rejects);
  }
  process.stderr.write(
    `imported ${counts.imported} events, ${counts.already} already there, ${counts.rejected} rejected${counts.rejected > 0 ? ` (reasons in ${rejectsPath})` : ""}\n`,
  );
  return counts.rejected > 0 ? 3 : 0;
}
