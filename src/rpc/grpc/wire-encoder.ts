// Encoders compiled from the protobuf-es descriptors, for the grpc-js listener's responses (and the bench
// clients' requests). toBinary walks each message through protobuf-es's reflection (a wrapper object, a
// presence check and a writer fork per field): for a TrackBatch answer of a thousand results, that cost
// more CPU than deciding the events. These encoders are built once per message type from the same
// descriptors, so they follow the proto, and write the same bytes as toBinary (a test holds them to
// that). They read created messages and plain init objects alike, so a handler's answer needs no
// create() first.
//
// Only what meterd's messages use is compiled: strings, bools, doubles, 32- and 64-bit varint integers,
// enums, messages, repeated fields, oneofs, string-to-string maps and proto3 `optional` (explicit presence:
// written when set, zero or not). A message type with anything else (other maps, bytes, fixed or zigzag
// integers, required fields, groups) gets no encoder: toBinary serves it.
import { type DescField, type DescMessage, ScalarType } from "@bufbuild/protobuf";
import { NotCompiled, treeCompiled, WIRE_DELIMITED, WIRE_FIXED32, WIRE_FIXED64, WIRE_VARINT } from "./wire-types.js";

/** Field presence as protobuf-es numbers it: proto3 `optional`, written whenever it is set. */
const EXPLICIT = 1;
/** proto3's default, where a zero value is not written. */
const IMPLICIT = 2;

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** A growable output buffer, reused by every encode on this thread: the result is copied out of it. */
class Writer {
  buf = Buffer.allocUnsafe(64 * 1024);
  pos = 0;

  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  /** A non-negative integer below 2^53. */
  varint(n: number): void {
    this.ensure(8);
    while (n > 0x7f) {
      this.buf[this.pos++] = (n % 128) | 0x80;
      n = Math.floor(n / 128);
    }
    this.buf[this.pos++] = n;
  }

  /** Any 64-bit value, as its unsigned two's complement (negative int32 and int64 take ten bytes). */
  varint64(n: bigint): void {
    // Most values (Timestamp seconds, sequence numbers) are small and positive: the number path is cheaper.
    if (n >= 0n && n <= MAX_SAFE) {
      this.varint(Number(n));
      return;
    }
    let v = BigInt.asUintN(64, n);
    this.ensure(10);
    while (v > 0x7fn) {
      this.buf[this.pos++] = Number(v & 0x7fn) | 0x80;
      v >>= 7n;
    }
    this.buf[this.pos++] = Number(v);
  }

  tag(no: number, wire: number): void {
    this.varint(no * 8 + wire);
  }

  string(s: string): void {
    const len = Buffer.byteLength(s);
    this.varint(len);
    this.ensure(len);
    this.pos += this.buf.write(s, this.pos, "utf8");
  }

  double(d: number): void {
    this.ensure(8);
    this.pos = this.buf.writeDoubleLE(d, this.pos);
  }

  float(f: number): void {
    this.ensure(4);
    this.pos = this.buf.writeFloatLE(f, this.pos);
  }

  /** Writes a length-delimited body: one byte is kept for its length, and the body moved if it needs more. */
  delimited(body: () => void): void {
    const at = this.open();
    body();
    this.close(at);
  }

  /** Starts a length-delimited body (see close): keeps one byte for its length, returns where. */
  open(): number {
    this.ensure(1);
    return this.pos++;
  }

  /** Ends the body opened at `at`: writes its length there, moving the body if the length needs more bytes. */
  close(at: number): void {
    const len = this.pos - at - 1;
    if (len < 0x80) {
      this.buf[at] = len;
      return;
    }
    let size = 1;
    for (let n = len; n > 0x7f; n = Math.floor(n / 128)) size++;
    this.ensure(size - 1);
    this.buf.copyWithin(at + size, at + 1, this.pos);
    this.pos = at;
    this.varint(len);
    this.pos += len;
  }
}

type Encode = (w: Writer, value: Record<string, unknown>) => void;
type WriteValue = (w: Writer, value: unknown) => void;

interface Scalar {
  wire: number;
  write: WriteValue;
  isZero(value: unknown): boolean;
}

const asInt64 = (v: unknown): bigint => (typeof v === "bigint" ? v : BigInt(v as number | string));

function int32(w: Writer, v: unknown): void {
  const n = v as number;
  if (n >= 0) w.varint(n);
  else w.varint64(BigInt(n));
}

const SCALARS: Partial<Record<ScalarType, Scalar>> = {
  [ScalarType.STRING]: { wire: WIRE_DELIMITED, write: (w, v) => w.string(v as string), isZero: (v) => v === "" },
  [ScalarType.BOOL]: { wire: WIRE_VARINT, write: (w, v) => w.varint(v ? 1 : 0), isZero: (v) => v === false },
  // -0 is written, +0 is not, as isScalarZeroValue decides.
  [ScalarType.DOUBLE]: { wire: WIRE_FIXED64, write: (w, v) => w.double(v as number), isZero: (v) => Object.is(v, 0) },
  [ScalarType.FLOAT]: { wire: WIRE_FIXED32, write: (w, v) => w.float(v as number), isZero: (v) => Object.is(v, 0) },
  [ScalarType.INT32]: { wire: WIRE_VARINT, write: int32, isZero: (v) => v == 0 },
  [ScalarType.UINT32]: { wire: WIRE_VARINT, write: (w, v) => w.varint(v as number), isZero: (v) => v == 0 },
  [ScalarType.INT64]: { wire: WIRE_VARINT, write: (w, v) => w.varint64(asInt64(v)), isZero: (v) => v == 0 },
  [ScalarType.UINT64]: { wire: WIRE_VARINT, write: (w, v) => w.varint64(asInt64(v)), isZero: (v) => v == 0 },
};

/** Compiled encoders by message type; null for a type that cannot be compiled. */
const compiled = new Map<string, { encode: Encode | null }>();

function compileMessage(desc: DescMessage): { encode: Encode | null } {
  const known = compiled.get(desc.typeName);
  if (known) return known;
  // Registered before its fields are compiled, so that a type that contains itself finds its own slot.
  const slot: { encode: Encode | null } = { encode: null };
  compiled.set(desc.typeName, slot);
  const writers: Encode[] = [];
  for (const field of [...desc.fields].sort((a, b) => a.number - b.number)) {
    const write = compileField(field);
    if (write === null) return slot;
    writers.push(write);
  }
  slot.encode = (w, value) => {
    const unknown = (value as { $unknown?: unknown[] }).$unknown;
    if (unknown !== undefined && unknown.length > 0) throw new NotCompiled(`${desc.typeName} has unknown fields`);
    for (const write of writers) write(w, value);
  };
  return slot;
}

function scalarOf(field: DescField): Scalar | null {
  if (field.fieldKind === "enum" || (field.fieldKind === "list" && field.listKind === "enum")) return SCALARS[ScalarType.INT32]!;
  if (field.fieldKind === "scalar" || (field.fieldKind === "list" && field.listKind === "scalar")) return SCALARS[field.scalar] ?? null;
  return null;
}

function compileField(field: DescField): Encode | null {
  const name = field.localName;
  const no = field.number;
  if (field.fieldKind === "map") {
    if (field.mapKey !== ScalarType.STRING || field.mapKind !== "scalar" || field.scalar !== ScalarType.STRING) return null;
    // Each entry a message of its key (1) and value (2), both always written, in the object's key order.
    return (w, value) => {
      const map = value[name] as Record<string, string> | undefined;
      if (map === undefined) return;
      for (const key of Object.keys(map)) {
        w.tag(no, WIRE_DELIMITED);
        w.delimited(() => {
          w.tag(1, WIRE_DELIMITED);
          w.string(key);
          w.tag(2, WIRE_DELIMITED);
          w.string(map[key]!);
        });
      }
    };
  }
  if (field.fieldKind === "message" || (field.fieldKind === "list" && field.listKind === "message")) {
    if (field.delimitedEncoding) return null;
    const target = field.message;
    if (target === undefined) return null;
    // The slot of a type still being compiled (one that contains itself) is filled by the time a value
    // is written; compileEncoder checks that the whole tree compiled.
    const slot = compileMessage(target);
    const tag = no * 8 + WIRE_DELIMITED;
    const one: WriteValue = (w, v) => {
      w.varint(tag);
      const at = w.open();
      slot.encode!(w, v as Record<string, unknown>);
      w.close(at);
    };
    if (field.fieldKind === "list") {
      return (w, value) => {
        const list = value[name] as unknown[] | undefined;
        if (list !== undefined) for (const item of list) one(w, item);
      };
    }
    return inOneofOrPresent(field, one);
  }
  const scalar = scalarOf(field);
  if (scalar === null) return null;
  if (field.fieldKind === "list") {
    if (field.packed) {
      return (w, value) => {
        const list = value[name] as unknown[] | undefined;
        if (list === undefined || list.length === 0) return;
        w.tag(no, WIRE_DELIMITED);
        w.delimited(() => {
          for (const item of list) scalar.write(w, item);
        });
      };
    }
    return (w, value) => {
      const list = value[name] as unknown[] | undefined;
      if (list === undefined) return;
      for (const item of list) {
        w.tag(no, scalar.wire);
        scalar.write(w, item);
      }
    };
  }
  const one: WriteValue = (w, v) => {
    w.tag(no, scalar.wire);
    scalar.write(w, v);
  };
  if (field.oneof !== undefined || field.presence === EXPLICIT) return inOneofOrPresent(field, one);
  if (field.presence !== IMPLICIT) return null;
  const zero = field.fieldKind === "enum" ? field.enum.values[0]!.number : undefined;
  const isZero = field.fieldKind === "enum" ? (v: unknown) => v === zero : scalar.isZero;
  return (w, value) => {
    const v = value[name];
    if (v !== undefined && !isZero(v)) one(w, v);
  };
}

/**
 * A oneof member is written when its case is chosen, zero or not; a message field, or a scalar with
 * explicit presence, when it is set.
 */
function inOneofOrPresent(field: DescField, one: WriteValue): Encode {
  const name = field.localName;
  if (field.oneof !== undefined) {
    const group = field.oneof.localName;
    return (w, value) => {
      const chosen = value[group] as { case?: string; value?: unknown } | undefined;
      if (chosen !== undefined && chosen.case === name) one(w, chosen.value);
    };
  }
  return (w, value) => {
    const v = value[name];
    if (v !== undefined && v !== null) one(w, v);
  };
}

const writer = new Writer();

/**
 * The compiled encoder of a message type, or null when the type (or a type it contains) has a field
 * it does not cover. The encoder throws NotCompiled for a value it will not write; its caller then uses
 * toBinary.
 */
export function compileEncoder(desc: DescMessage): ((value: object) => Buffer) | null {
  const slot = compileMessage(desc);
  if (slot.encode === null || !treeCompiled(desc, (name) => compiled.get(name)?.encode != null)) return null;
  const encode = slot.encode;
  return (value) => {
    writer.pos = 0;
    encode(writer, value as Record<string, unknown>);
    return Buffer.from(writer.buf.subarray(0, writer.pos));
  };
}
