// The data a dslc model's graphs read, checked against the manifest and cast to its dtypes as `dslc train` does:
// any number for a float input, whole numbers for an integer one (ONNX Runtime refuses a float64 array for a
// float32 input), the shape after the batch axis, the same number of rows, integer ids and labels in
// [0, classes), values in a declared `range` (probability targets), no NaN or infinity.
import { readNpz } from "./npz.mjs";

// Stop with dslc's exit codes: 1 for the model's graphs, 2 for the command line, 3 for the data.
export function fail(message, code) {
  console.error(`error: ${message}`);
  process.exit(code);
}

const CAST = {
  float32: (v) => Float32Array.from(v, Number), float64: (v) => Float64Array.from(v, Number),
  int64: (v) => BigInt64Array.from(v, (x) => BigInt(x)), int32: (v) => Int32Array.from(v, Number),
};

// The data inputs and targets of the training and predict graphs, by name: {name, dtype, shape, [classes], [range]}.
export function manifestInputs(graphs) {
  const specs = {};
  for (const [key, g] of Object.entries(graphs)) {
    if (["train", "predict"].includes(key.split(".")[0])) for (const t of g.inputs) specs[t.name] ??= t;
  }
  return specs;
}

// The arrays of the .npz file `path` that `specs` (as manifestInputs gives them) name, checked and cast.
export function checkedData(path, specs) {
  let arrays;
  try {
    arrays = readNpz(path);
  } catch (e) {
    fail(`${path}: cannot read it as an .npz file (${e.message})`, 3);
  }
  const names = (list) => (list.length > 0 ? `\`${list.join("`, `")}\`` : "nothing");
  const missing = Object.keys(specs).filter((name) => !(name in arrays));
  if (missing.length > 0) {
    fail(`${path} has no array ${names(missing)}; it holds ${names(Object.keys(arrays))}, and the model reads ${names(Object.keys(specs))}`, 3);
  }
  const out = {};
  for (const [name, t] of Object.entries(specs)) {
    const { shape, data } = arrays[name];
    const where = `${path}: \`${name}\``;
    // after the batch axis, which a build may pin (`dslc build --dim`)
    if (shape.length !== t.shape.length || t.shape.some((d, i) => i > 0 && typeof d === "number" && d !== shape[i])) {
      fail(`${where} has shape [${shape.join(", ")}]; the model reads [${t.shape.join(", ")}]`, 3);
    }
    const width = shape.slice(1).reduce((a, b) => a * b, 1);
    const row = (i) => Math.floor(i / width);
    const values = Array.from(data, Number);
    const bad = (test) => values.findIndex(test);
    let at = bad((v) => !Number.isFinite(v));
    if (at >= 0) fail(`${where}, row ${row(at)}: NaN or infinity`, 3);
    if (t.dtype.startsWith("int") && (at = bad((v) => !Number.isInteger(v))) >= 0) {
      fail(`${where}, row ${row(at)}: a fraction, where the model reads ${t.dtype}`, 3);
    }
    if (t.classes !== undefined && (at = bad((v) => v < 0 || v >= t.classes)) >= 0) {
      fail(`${where}, row ${row(at)}: ${values[at]} is outside [0, ${t.classes}), the manifest's \`classes\``, 3);
    }
    if (t.range !== undefined && (at = bad((v) => v < t.range[0] || v > t.range[1])) >= 0) {
      fail(`${where}, row ${row(at)}: a value outside [${t.range.join(", ")}], the manifest's \`range\``, 3);
    }
    const same = arrays[name].dtype === t.dtype;
    if (!same && !CAST[t.dtype]) fail(`${where} holds ${arrays[name].dtype} values; the model reads ${t.dtype}`, 3);
    out[name] = { dtype: t.dtype, shape, data: same ? data : CAST[t.dtype](data) };
  }
  const rows = Object.entries(out).map(([name, a]) => `\`${name}\` ${a.shape[0]}`);
  if (new Set(Object.values(out).map((a) => a.shape[0])).size > 1) {
    fail(`${path}: the arrays have different numbers of rows: ${rows.join(", ")}`, 3);
  }
  return out;
}
