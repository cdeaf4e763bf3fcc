// Reads NumPy's .npz files (np.savez, np.savez_compressed) into {name: {dtype, shape, data}}:
// a zip archive of .npy files, each a small header then the array's bytes in C order.
import { readFileSync } from "node:fs";
import { inflateRawSync } from "node:zlib";

const TYPES = { "<f4": ["float32", Float32Array], "<f8": ["float64", Float64Array], "<i8": ["int64", BigInt64Array],
  "<i4": ["int32", Int32Array], "|b1": ["bool", Uint8Array], "|u1": ["uint8", Uint8Array] };

export function readNpz(path) {
  const zip = readFileSync(path);
  const arrays = {};
  let at = 0;
  while (zip.readUInt32LE(at) === 0x04034b50) {  // a local file header
    const method = zip.readUInt16LE(at + 8);
    let size = zip.readUInt32LE(at + 18);
    const nameLength = zip.readUInt16LE(at + 26);
    const extraLength = zip.readUInt16LE(at + 28);
    const name = zip.toString("utf8", at + 30, at + 30 + nameLength);
    const extra = at + 30 + nameLength;
    if (size === 0xffffffff) size = Number(zip.readBigUInt64LE(extra + 12));  // zip64: the sizes are in the extra field
    const start = extra + extraLength;
    const stored = zip.subarray(start, start + size);
    arrays[name.replace(/\.npy$/, "")] = readNpy(method === 8 ? inflateRawSync(stored) : stored);
    at = start + size;
  }
  return arrays;
}

function readNpy(npy) {
  const version = npy[6];  // after the magic "\x93NUMPY": format 1 has a 2-byte header length, 2 and 3 a 4-byte one
  const begin = version === 1 ? 10 : 12;
  const header = npy.toString("latin1", begin, begin + (version === 1 ? npy.readUInt16LE(8) : npy.readUInt32LE(8)));
  const descr = header.match(/'descr': *'([^']+)'/)[1];
  const shape = header.match(/'shape': *\(([^)]*)\)/)[1].split(",").filter((d) => d.trim()).map(Number);
  if (/'fortran_order': *True/.test(header) || !TYPES[descr]) throw new Error(`unsupported .npy array: ${header}`);
  const [dtype, Typed] = TYPES[descr];
  const bytes = npy.subarray(begin + header.length);
  const data = new Typed(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
  return { dtype, shape, data };
}
