// Reads NumPy's .npz files (np.savez, np.savez_compressed) into {name: {dtype, shape, data}} and writes
// them: a zip archive of .npy files, each a small header then the array's bytes in C order.
import { readFileSync, writeFileSync } from "node:fs";
import { inflateRawSync } from "node:zlib";

const TYPES = { "<f4": ["float32", Float32Array], "<f8": ["float64", Float64Array], "<i8": ["int64", BigInt64Array],
  "<i4": ["int32", Int32Array], "|b1": ["bool", Uint8Array], "|u1": ["uint8", Uint8Array] };

export function readNpz(path) {
  const zip = readFileSync(path);
  const magic = zip.length >= 4 ? zip.readUInt32LE(0) : 0;
  if (magic !== 0x04034b50 && magic !== 0x06054b50) throw new Error("not a zip archive, as .npz files are");
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

const DESCR = Object.fromEntries(Object.entries(TYPES).map(([descr, [dtype]]) => [dtype, descr]));

// Writes {name: {dtype, shape, data}} (ONNX Runtime tensors have these as `type`, `dims`, `data`) as an
// uncompressed .npz, which numpy.load reads and `dslc train --resume FILE.npz` continues from.
export function writeNpz(path, arrays) {
  const locals = [];
  const centrals = [];
  let offset = 0;
  for (const [name, array] of Object.entries(arrays)) {
    const npy = npyBytes(array.dtype ?? array.type, array.shape ?? array.dims, array.data);
    const fileName = Buffer.from(`${name}.npy`, "utf8");
    const crc = crc32(npy);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);                       // version needed: 2.0
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(npy.length, 18);              // stored: compressed size = size
    local.writeUInt32LE(npy.length, 22);
    local.writeUInt16LE(fileName.length, 26);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(npy.length, 20);
    central.writeUInt32LE(npy.length, 24);
    central.writeUInt16LE(fileName.length, 28);
    central.writeUInt32LE(offset, 42);
    locals.push(local, fileName, npy);
    centrals.push(central, fileName);
    offset += local.length + fileName.length + npy.length;
  }
  const centralSize = centrals.reduce((n, b) => n + b.length, 0);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(centrals.length / 2, 8);
  end.writeUInt16LE(centrals.length / 2, 10);
  end.writeUInt32LE(centralSize, 12);
  end.writeUInt32LE(offset, 16);
  writeFileSync(path, Buffer.concat([...locals, ...centrals, end]));
}

function npyBytes(dtype, shape, data) {
  if (!DESCR[dtype]) throw new Error(`cannot write a ${dtype} array to .npy`);
  const dims = shape.join(", ") + (shape.length === 1 ? "," : "");
  const text = `{'descr': '${DESCR[dtype]}', 'fortran_order': False, 'shape': (${dims}), }`;
  const padded = text.padEnd(Math.ceil((10 + text.length + 1) / 64) * 64 - 10 - 1) + "\n";  // data 64-byte aligned
  const head = Buffer.alloc(10);
  head.write("\x93NUMPY", 0, "latin1");
  head[6] = 1;  // format 1.0
  head.writeUInt16LE(padded.length, 8);
  return Buffer.concat([head, Buffer.from(padded, "latin1"), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]);
}

const CRC_TABLE = Int32Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c;
});

function crc32(bytes) {
  let c = -1;
  for (const byte of bytes) c = CRC_TABLE[(c ^ byte) & 0xff] ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}
