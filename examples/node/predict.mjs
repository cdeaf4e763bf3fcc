// Run an exported dslc model (`dslc export M.dl --weights RUN -o M.onnx`: the inference graph with the run's
// weights) with ONNX Runtime for Node.js or for the web, as `dslc predict` does:
//
//   dslc export examples/digits/digits.dl --weights runs/digits -o digits.onnx
//   (cd examples/node && ONNXRUNTIME_NODE_INSTALL=skip npm ci)
//   node examples/node/predict.mjs digits.onnx examples/digits/test.npz -o probs.npz [--batch-size 256] [--backend node|web]
//
// The .npz arrays are named as the model's inputs (the session's `inputNames`, with their dtypes and shapes
// in `inputMetadata`); runs them a batch at a time and writes one array per output, all rows in order.
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { checkedData, fail } from "./data.mjs";
import { writeNpz } from "./npz.mjs";

const USAGE = "usage: node predict.mjs MODEL.onnx INPUT.npz -o OUTPUT.npz [--batch-size N] [--backend node|web]";
let options, modelFile, inputFile;
try {
  ({ values: options, positionals: [modelFile, inputFile] } = parseArgs({
    allowPositionals: true,
    options: { output: { type: "string", short: "o" }, "batch-size": { type: "string", default: "256" },
      backend: { type: "string", default: "node" } },
  }));
} catch (e) {
  fail(`${e.message}\n${USAGE}`, 2);
}
if (!modelFile || !inputFile || !options.output) fail(USAGE, 2);
if (!/^[0-9]+$/.test(options["batch-size"]) || Number(options["batch-size"]) < 1) {
  fail(`--batch-size must be a whole number >= 1, got ${options["batch-size"]}`, 2);
}
if (!["node", "web"].includes(options.backend)) fail(`--backend is node or web, got ${options.backend}`, 2);
const ort = await import(options.backend === "web" ? "onnxruntime-web" : "onnxruntime-node");
if (options.backend === "web") ort.env.wasm.numThreads = 1;

let session;
try {
  session = await ort.InferenceSession.create(readFileSync(modelFile));
} catch (e) {
  fail(`${modelFile}: cannot load it as an ONNX model (${e.message})`, 3);
}
const specs = Object.fromEntries(session.inputMetadata.map((t) => [t.name, { name: t.name, dtype: t.type, shape: t.shape }]));
const data = checkedData(inputFile, specs);
const rows = Object.values(data)[0].shape[0];
const batchSize = Number(options["batch-size"]);

const outputs = {};  // per output: the batches' tensors, joined at the end
for (let start = 0; start < rows; start += batchSize) {
  const end = Math.min(start + batchSize, rows);
  const feeds = {};
  for (const [name, { dtype, shape, data: values }] of Object.entries(data)) {
    const width = shape.slice(1).reduce((a, b) => a * b, 1);
    feeds[name] = new ort.Tensor(dtype, values.subarray(start * width, end * width), [end - start, ...shape.slice(1)]);
  }
  const result = await session.run(feeds);
  for (const name of session.outputNames) (outputs[name] ??= []).push(result[name]);
}
const joined = {};
for (const [name, parts] of Object.entries(outputs)) {
  const data = new parts[0].data.constructor(parts.reduce((n, t) => n + t.data.length, 0));
  let at = 0;
  for (const t of parts) {
    data.set(t.data, at);
    at += t.data.length;
  }
  joined[name] = { dtype: parts[0].type, shape: [rows, ...parts[0].dims.slice(1)], data };
}
writeNpz(options.output, joined);
console.log(`wrote ${Object.keys(joined).join(", ")} of ${rows} rows to ${options.output}`);
