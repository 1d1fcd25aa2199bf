// grpc-js Metadata to and from the Fetch Headers that connect-es handlers read and write, and a
// ConnectError as a grpc-js status (details in grpc-status-details-bin, as connect-es sends them).
import type { ConnectError } from "@connectrpc/connect";
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { Metadata, type StatusObject } from "@grpc/grpc-js";
import type { HeaderReader } from "../../auth/principal.js";

// Set by the server, never by the application: they are not copied into response metadata.
const RESERVED_METADATA = new Set(["grpc-status", "grpc-message", "content-type", "te", "grpc-encoding", "grpc-accept-encoding"]);

export function metadataToHeaders(metadata: Metadata): Headers {
  const headers = new Headers();
  for (const [key, values] of Object.entries(metadata.toJSON())) {
    for (const value of values) {
      try {
        headers.append(key, typeof value === "string" ? value : Buffer.from(value).toString("base64"));
      } catch {
        // Not a valid HTTP header: not passed to the handler.
      }
    }
  }
  return headers;
}

/** Adds `headers` to `metadata` (binary "-bin" values decoded from base64); reserved keys are skipped. */
export function addHeadersTo(metadata: Metadata, headers: Headers | undefined): Metadata {
  headers?.forEach((value, key) => {
    if (RESERVED_METADATA.has(key)) return;
    try {
      metadata.add(key, key.endsWith("-bin") ? Buffer.from(value, "base64") : value);
    } catch {
      // A key grpc-js refuses (for example an illegal character) is dropped rather than failing the call.
    }
  });
  return metadata;
}

export function headerReaderOf(metadata: Metadata): HeaderReader {
  return (name) => {
    const first = metadata.get(name.toLowerCase())[0];
    return typeof first === "string" ? first : undefined;
  };
}

/** A ConnectError as a grpc-js status; its details go to grpc-status-details-bin, as connect-es does. */
export function grpcStatusOf(error: ConnectError, trailer: Headers | undefined): Partial<StatusObject> {
  const headers = setTrailerStatus(new Headers(trailer), error);
  return { code: error.code as number, details: error.rawMessage, metadata: addHeadersTo(new Metadata(), headers) };
}
