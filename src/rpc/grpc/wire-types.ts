// What the compiled codecs (wire-encoder.ts, wire-decoder.ts) share: the wire types they use, their
// "leave this to protobuf-es" error, and the check that a whole message tree was compiled.
import type { DescField, DescMessage } from "@bufbuild/protobuf";

export const WIRE_VARINT = 0;
export const WIRE_FIXED64 = 1;
export const WIRE_DELIMITED = 2;
export const WIRE_FIXED32 = 5;

/** Thrown for a value or input a compiled codec does not handle: protobuf-es's toBinary or fromBinary takes over. */
export class NotCompiled extends Error {}

/** The message type a field holds, singly or in a list; undefined for any other field. */
export function messageOf(field: DescField): DescMessage | undefined {
  return field.fieldKind === "message" || (field.fieldKind === "list" && field.listKind === "message") ? field.message : undefined;
}

/**
 * Whether `desc` and every message type it holds compiled (`compiledType`). A field's compiler sees a
 * type that holds itself while it is still being compiled, so this is checked once the tree is done.
 */
export function treeCompiled(desc: DescMessage, compiledType: (typeName: string) => boolean, seen = new Set<string>()): boolean {
  if (seen.has(desc.typeName)) return true;
  seen.add(desc.typeName);
  if (!compiledType(desc.typeName)) return false;
  for (const field of desc.fields) {
    const target = messageOf(field);
    if (target !== undefined && !treeCompiled(target, compiledType, seen)) return false;
  }
  return true;
}
