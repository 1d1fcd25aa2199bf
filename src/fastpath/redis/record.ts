// An idempotency record as read-records.lua returns it: "<P or S>\t<fingerprint>\t<event id>".

export interface ParsedRecord {
  state: "pending" | "settled";
  fingerprint: string;
  eventId: string;
}

export function parseRecord(value: string): ParsedRecord | null {
  const [state, fingerprint = "", eventId = ""] = value.split("\t");
  if (state !== "P" && state !== "S") return null;
  return { state: state === "P" ? "pending" : "settled", fingerprint, eventId };
}
