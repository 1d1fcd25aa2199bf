// Request decoders compiled from the protobuf-es descriptors, for the grpc-js listener: fromBinary reads
// each field through protobuf-es's reflection, which made decoding a TrackBatch of a thousand events
// about 3.7 µs per event. These decoders are built once per message type from the same descriptors and
// produce what fromBinary produces (messages with their $typeName and every default), for the canonical
// encoding that clients write. Anything else (an unknown field, a wire type other than the field's, a
// message field sent twice, a truncated buffer) throws NotCompiled, and the caller decodes the whole
// request with fromBinary, which keeps unknown fields and reports malformed input as it always has
// (as it does for any other error of these decoders, such as invalid UTF-8).
//
// Covered: proto3 strings, bools, doubles, 32- and 64-bit varint integers, enums, messages, repeated
// fields (packed or not), oneofs, string-keyed maps of strings, and explicit presence. A type with
// anything else gets no decoder.
import { create, type DescField, type DescMessage, ScalarType } from "@bufbuild/protobuf";
import { Edition } from "@bufbuild/protobuf/wkt";
import { NotCompiled, treeCompiled, WIRE_DELIMITED, WIRE_FIXED64, WIRE_VARINT } from "./wire-types.js";

/**
 * proto3 strings must be valid UTF-8: protobuf-es decodes them with a fatal TextDecoder, and so does this
 * (for non-ASCII text). Invalid text throws, and the caller hands the input to fromBinary for its error.
 */
const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Reads buf from pos to end; a nested message narrows end while it is read (enter, leave). */
class Reader {
  pos: number;
  constructor(
    readonly buf: Buffer,
    start: number,
    public end: number,
  ) {
    this.pos = start;
  }

  /**
   * Narrows the reader to the next length-delimited value: returns the end it had, for leave(). No
   * closure or tuple per value: this runs for every event of a batch, and for each of its properties.
   */
  enter(): number {
    const len = this.varint32() >>> 0;
    if (this.pos + len > this.end) throw new NotCompiled("truncated field");
    const outer = this.end;
    this.end = this.pos + len;
    return outer;
  }

  /** Goes on after the value entered, whatever of it was read. */
  leave(outer: number): void {
    this.pos = this.end;
    this.end = outer;
  }

  /** A varint that fits 32 bits (tags, lengths, int32 and enums), as an unsigned or signed number. */
  varint32(): number {
    let result = 0;
    let shift = 0;
    for (;;) {
      if (this.pos >= this.end) throw new NotCompiled("truncated varint");
      const byte = this.buf[this.pos++]!;
      if (shift < 28) result |= (byte & 0x7f) << shift;
      else if (shift === 28) result |= (byte & 0x0f) << 28;
      else if (shift >= 70) throw new NotCompiled("varint too long");
      // Bytes past the 32nd bit are the sign extension of a negative int32: they change nothing.
      if ((byte & 0x80) === 0) return result;
      shift += 7;
    }
  }

  varint64(): bigint {
    let result = 0n;
    let shift = 0n;
    for (;;) {
      if (this.pos >= this.end) throw new NotCompiled("truncated varint");
      const byte = this.buf[this.pos++]!;
      result |= BigInt(byte & 0x7f) << shift;
      if ((byte & 0x80) === 0) return result;
      shift += 7n;
      if (shift >= 70n) throw new NotCompiled("varint too long");
    }
  }

  string(): string {
    const len = this.varint32() >>> 0;
    const start = this.pos;
    const end = start + len;
    if (end > this.end) throw new NotCompiled("truncated field");
    this.pos = end;
    for (let i = start; i < end; i++) {
      if (this.buf[i]! >= 0x80) return utf8.decode(this.buf.subarray(start, end));
    }
    return this.buf.toString("latin1", start, end);
  }

  double(): number {
    if (this.pos + 8 > this.end) throw new NotCompiled("truncated double");
    const value = this.buf.readDoubleLE(this.pos);
    this.pos += 8;
    return value;
  }
}

type Target = Record<string, unknown>;
type ReadField = (r: Reader, target: Target, wire: number) => void;

interface Compiled {
  /** A zero message of the type, as create() makes it. */
  make: () => Target;
  /** Field readers by field number (a sparse array: numbers are small). */
  fields: ReadField[];
  ok: boolean;
}

const compiled = new Map<string, Compiled>();

/** A scalar's wire type and how it is read; null for a scalar type not covered. */
function scalarReader(type: ScalarType): { wire: number; read: (r: Reader) => unknown } | null {
  switch (type) {
    case ScalarType.STRING:
      return { wire: WIRE_DELIMITED, read: (r) => r.string() };
    case ScalarType.BOOL:
      return { wire: WIRE_VARINT, read: (r) => r.varint64() !== 0n };
    case ScalarType.DOUBLE:
      return { wire: WIRE_FIXED64, read: (r) => r.double() };
    case ScalarType.INT32:
      return { wire: WIRE_VARINT, read: (r) => r.varint32() | 0 };
    case ScalarType.UINT32:
      return { wire: WIRE_VARINT, read: (r) => r.varint32() >>> 0 };
    case ScalarType.INT64:
      return { wire: WIRE_VARINT, read: (r) => BigInt.asIntN(64, r.varint64()) };
    case ScalarType.UINT64:
      return { wire: WIRE_VARINT, read: (r) => BigInt.asUintN(64, r.varint64()) };
    default:
      return null;
  }
}

function compileType(desc: DescMessage): Compiled {
  const known = compiled.get(desc.typeName);
  if (known) return known;
  const entry: Compiled = { make: zeroMaker(desc), fields: [], ok: true };
  compiled.set(desc.typeName, entry);
  if (desc.file.edition !== Edition.EDITION_PROTO3) {
    entry.ok = false;
    return entry;
  }
  for (const field of desc.fields) {
    const read = compileField(field);
    if (read === null) {
      entry.ok = false;
      return entry;
    }
    entry.fields[field.number] = read;
  }
  return entry;
}

/**
 * Makes zero messages of a type as create() does, faster: a copy of one zero message, with its own
 * lists and maps (the only parts a decoder changes in place). proto3 only: proto2 defaults live on a
 * prototype, which a copy would lose.
 */
function zeroMaker(desc: DescMessage): () => Target {
  const zero = create(desc) as unknown as Target;
  // Fields with explicit presence (message fields, proto3 `optional`) are absent from a zero message.
  // Set to undefined here, which protobuf-es reads as unset, every decoded message of the type has one
  // shape: adding a property to each copy made decoding a TrackBatch about three times slower.
  for (const f of desc.fields) {
    if (f.oneof === undefined && (f.fieldKind === "scalar" || f.fieldKind === "enum" || f.fieldKind === "message") && !(f.localName in zero)) {
      zero[f.localName] = undefined;
    }
  }
  const lists = desc.fields.filter((f) => f.fieldKind === "list").map((f) => f.localName);
  const maps = desc.fields.filter((f) => f.fieldKind === "map").map((f) => f.localName);
  return () => {
    const target = { ...zero };
    for (const name of lists) target[name] = [];
    for (const name of maps) target[name] = {};
    return target;
  };
}

function decodeInto(type: Compiled, r: Reader, target: Target): void {
  while (r.pos < r.end) {
    const tag = r.varint32() >>> 0;
    const read = type.fields[tag >>> 3];
    if (read === undefined) throw new NotCompiled(`unknown field ${tag >>> 3}`);
    read(r, target, tag & 7);
  }
}

function readMessage(type: Compiled, r: Reader): Target {
  const target = type.make();
  const outer = r.enter();
  decodeInto(type, r, target);
  r.leave(outer);
  return target;
}

function compileField(field: DescField): ReadField | null {
  const name = field.localName;
  if (field.fieldKind === "map") {
    if (field.mapKey !== ScalarType.STRING || field.mapKind !== "scalar" || field.scalar !== ScalarType.STRING) return null;
    return (r, target, wire) => {
      if (wire !== WIRE_DELIMITED) throw new NotCompiled("map entry wire type");
      let key = "";
      let value = "";
      const outer = r.enter();
      while (r.pos < r.end) {
        const tag = r.varint32() >>> 0;
        if (tag === 10) key = r.string();
        else if (tag === 18) value = r.string();
        else throw new NotCompiled("map entry field");
      }
      r.leave(outer);
      (target[name] as Record<string, string>)[key] = value;
    };
  }
  if (field.fieldKind === "message" || (field.fieldKind === "list" && field.listKind === "message")) {
    if (field.delimitedEncoding || field.message === undefined) return null;
    const type = compileType(field.message);
    if (!type.ok) return null;
    if (field.fieldKind === "list") {
      return (r, target, wire) => {
        if (wire !== WIRE_DELIMITED) throw new NotCompiled("message wire type");
        (target[name] as Target[]).push(readMessage(type, r));
      };
    }
    return assign(field, (r, wire) => {
      if (wire !== WIRE_DELIMITED) throw new NotCompiled("message wire type");
      return readMessage(type, r);
    }, true);
  }
  const scalarType = field.fieldKind === "enum" || (field.fieldKind === "list" && field.listKind === "enum") ? ScalarType.INT32 : field.scalar;
  if (scalarType === undefined) return null;
  const scalar = scalarReader(scalarType);
  if (scalar === null) return null;
  if (field.fieldKind === "list") {
    return (r, target, wire) => {
      const list = target[name] as unknown[];
      if (wire === scalar.wire) {
        list.push(scalar.read(r));
        return;
      }
      if (wire !== WIRE_DELIMITED) throw new NotCompiled("list wire type");
      const outer = r.enter();
      while (r.pos < r.end) list.push(scalar.read(r));
      r.leave(outer);
    };
  }
  return assign(field, (r, wire) => {
    if (wire !== scalar.wire) throw new NotCompiled("scalar wire type");
    return scalar.read(r);
  }, false);
}

/** Sets a singular field: within its oneof when it has one; a message field that repeats is left to fromBinary (it merges). */
function assign(field: DescField, read: (r: Reader, wire: number) => unknown, isMessage: boolean): ReadField {
  const name = field.localName;
  if (field.oneof !== undefined) {
    const group = field.oneof.localName;
    return (r, target, wire) => {
      const current = target[group] as { case?: string };
      if (isMessage && current.case === name) throw new NotCompiled("message field repeated");
      target[group] = { case: name, value: read(r, wire) };
    };
  }
  return (r, target, wire) => {
    if (isMessage && target[name] !== undefined) throw new NotCompiled("message field repeated");
    target[name] = read(r, wire);
  };
}

/**
 * The compiled decoder of a message type, or null when the type (or a type it contains) has a field it
 * does not cover. The decoder throws NotCompiled for input it will not read; its caller then uses
 * fromBinary.
 */
export function compileDecoder(desc: DescMessage): ((bytes: Buffer) => object) | null {
  const type = compileType(desc);
  if (!treeCompiled(desc, (name) => compiled.get(name)?.ok === true)) return null;
  return (bytes) => {
    const target = type.make();
    decodeInto(type, new Reader(bytes, 0, bytes.length), target);
    return target;
  };
}
