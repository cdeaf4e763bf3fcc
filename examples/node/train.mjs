// Train a dslc model with ONNX Runtime for Node.js, driven by its manifest alone:
//
//   dslc build examples/digits/digits.dl -o out/digits
//   (cd examples/node && ONNXRUNTIME_NODE_INSTALL=skip npm ci)
//   node examples/node/train.mjs out/digits examples/digits/train.npz [epochs=1] [batch size=32]
//
// The .npz arrays are named as the model's inputs and targets; batches are taken in order. Prints each
// step's loss (the same numbers as the Python loop in README's "Embedding the graphs"), then runs the
// predict graph with the trained values on the first batch and prints each output's first row.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { readNpz } from "./npz.mjs";

const [outDir, dataFile, epochs = "1", batchArg = "32"] = process.argv.slice(2);
const manifest = JSON.parse(readFileSync(join(outDir, readdirSync(outDir).find((f) => f.endsWith(".dslc.json")))));
const open = (graph) => ort.InferenceSession.create(join(outDir, graph.file));
const runSeed = 0n;

// The init graph has no inputs: one run gives every parameter, buffer and optimizer state,
// named as the training graph's inputs.
const values = await (await open(manifest.graphs.init)).run({});

// One training graph per objective ("train", or "train.<objective>" when the model has several).
const objectives = [];
for (const [key, graph] of Object.entries(manifest.graphs)) {
  if (key.split(".")[0] === "train") objectives.push({ graph, session: await open(graph) });
}

const data = readNpz(dataFile);
const rows = data[objectives[0].graph.inputs[0].name].shape[0];
const batchSize = Number(batchArg);

// Rows [start, end) of an array, as an ONNX Runtime tensor.
function slice({ dtype, shape, data: values }, start, end) {
  const width = shape.slice(1).reduce((a, b) => a * b, 1);
  return new ort.Tensor(dtype, values.subarray(start * width, end * width), [end - start, ...shape.slice(1)]);
}

// A hyper-input: `lr` takes its default (schedule it as you like); `seed` must change every step,
// dslc's formula is (run_seed * 1000003 + step) % 2**31.
function hyper(entry, step) {
  if (entry.kind === "seed") return new ort.Tensor("int64", [(runSeed * 1000003n + BigInt(step)) % 2n ** 31n], []);
  return new ort.Tensor(entry.dtype, [entry.default], []);
}

let step = 0;
for (let epoch = 0; epoch < Number(epochs); epoch++) {
  for (let start = 0; start < rows; start += batchSize) {
    const end = Math.min(start + batchSize, rows);
    for (const { graph, session } of objectives) {
      const feeds = {};
      for (const t of graph.inputs) feeds[t.name] = slice(data[t.name], start, end);
      for (const h of graph.hyper) feeds[h.name] = hyper(h, step);
      // every parameter (this objective's and the others' frozen ones), buffer and optimizer state
      for (const part of ["params", "frozen", "buffers", "state"]) {
        for (const t of graph[part]) feeds[t.name] = values[t.name];
      }
      const out = await session.run(feeds);
      // the next values of what this step updates: parameters, buffers (batch-norm statistics), state
      for (const part of ["params", "buffers", "state"]) {
        for (const t of graph[part]) values[t.name] = out[t.next];
      }
      console.log(`step ${step}${graph.objective ? ` ${graph.objective}` : ""}: loss ${out.loss.data[0]}`);
      step++;
    }
  }
}

// Inference with the trained values: the predict graph takes them as inputs (infer.onnx holds the
// initial values as initializers, which onnxruntime-node cannot replace and ignores feeds of).
const predict = manifest.graphs.predict;
const predictFeeds = {};
for (const t of predict.inputs) predictFeeds[t.name] = slice(data[t.name], 0, Math.min(batchSize, rows));
for (const t of [...predict.params, ...predict.buffers]) predictFeeds[t.name] = values[t.name];
const predicted = await (await open(predict)).run(predictFeeds);
for (const t of predict.outputs) console.log(`predicted ${t.name}, first row: ${Array.from(predicted[t.name].data.slice(0, predicted[t.name].data.length / predicted[t.name].dims[0])).join(",")}`);
