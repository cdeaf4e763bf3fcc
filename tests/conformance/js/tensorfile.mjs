// Named tensors in one file: the format of ../tensorfile.py (a little-endian uint32 header length,
// a JSON header [{name, dtype, shape, offset}], then each tensor's bytes, 8-byte aligned).
import { readFileSync, writeFileSync } from "node:fs";

export const TYPED = {
  float32: Float32Array, float64: Float64Array, int64: BigInt64Array, int32: Int32Array, bool: Uint8Array,
};

// Reads the file into {name: {dtype, shape, data}} with data a typed array.
export function readTensors(path) {
  const raw = readFileSync(path);
  const size = raw.readUInt32LE(0);
  const header = JSON.parse(raw.subarray(4, 4 + size).toString("utf8"));
  const start = raw.byteOffset + 4 + size;
  const tensors = {};
  for (const t of header) {
    const Typed = TYPED[t.dtype];
    const count = t.shape.reduce((a, b) => a * b, 1);
    const begin = start + t.offset;
    const data = new Typed(raw.buffer.slice(begin, begin + count * Typed.BYTES_PER_ELEMENT));
    tensors[t.name] = { dtype: t.dtype, shape: t.shape, data };
  }
  return tensors;
}

// Writes {name: {dtype, shape, data}} (data a typed array) in the same format.
export function writeTensors(path, tensors) {
  const header = [];
  const blobs = [];
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    const bytes = Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    const padded = Buffer.concat([bytes, Buffer.alloc((8 - (bytes.length % 8)) % 8)]);
    header.push({ name, dtype: t.dtype, shape: t.shape, offset });
    blobs.push(padded);
    offset += padded.length;
  }
  let head = JSON.stringify(header);
  head += " ".repeat((8 - ((Buffer.byteLength(head) + 4) % 8)) % 8);
  const length = Buffer.alloc(4);
  length.writeUInt32LE(Buffer.byteLength(head));
  writeFileSync(path, Buffer.concat([length, Buffer.from(head, "utf8"), ...blobs]));
}
