// Train a dslc model with ONNX Runtime for Node.js (or for the web: its wasm build), driven by its manifest alone:
//
//   dslc build examples/digits/digits.dl -o out/digits
//   (cd examples/node && ONNXRUNTIME_NODE_INSTALL=skip npm ci)
//   node examples/node/train.mjs out/digits examples/digits/train.npz [--epochs 1] [--batch-size 32] [--seed 0]
//        [--order ORDER.npz] [--val VAL.npz] [--save TRAINED.npz] [--backend node|web]
//
// The .npz arrays are named as the model's inputs and targets. Batches take the rows in file order, or, with
// --order, in the order of ORDER.npz's array `order` (row i: the sample order of the i-th epoch run here; with
// `dslc train`'s order, written by numpy, the epochs print what `dslc train` logs). Prints each epoch's loss and
// metrics (see metrics.mjs; with --val, the evaluation graphs' on VAL.npz too), then runs the predict graph
// with the trained values on the first batch and prints each output's first row. --save writes every trained
// value to an .npz that `dslc train --resume` continues from. A build exported with
// `dslc export --train-state` continues where the run stood: its manifest's `train_state` gives the epoch,
// the step and the seed.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { checkedData, fail, manifestInputs } from "./data.mjs";
import { epochValues } from "./metrics.mjs";
import { readNpz, writeNpz } from "./npz.mjs";

const USAGE = "usage: node train.mjs OUT_DIR DATA.npz [--epochs N] [--batch-size N] [--seed S] [--order ORDER.npz] "
  + "[--val VAL.npz] [--save TRAINED.npz] [--backend node|web]";
let options, outDir, dataFile;
try {
  ({ values: options, positionals: [outDir, dataFile] } = parseArgs({
    allowPositionals: true,
    options: {
      epochs: { type: "string", default: "1" }, "batch-size": { type: "string", default: "32" },
      seed: { type: "string" }, order: { type: "string" }, val: { type: "string" }, save: { type: "string" },
      backend: { type: "string", default: "node" },
    },
  }));
} catch (e) {
  fail(`${e.message}\n${USAGE}`, 2);
}
const counts = { epochs: 0, "batch-size": 1, seed: 0 };  // the least each may be
for (const [flag, least] of Object.entries(counts)) {
  if (options[flag] !== undefined && (!/^[0-9]+$/.test(options[flag]) || Number(options[flag]) < least)) fail(`--${flag} must be a whole number >= ${least}, got ${options[flag]}`, 2);
}
if (!["node", "web"].includes(options.backend)) fail(`--backend is node or web, got ${options.backend}`, 2);
if (!outDir || !dataFile) fail(USAGE, 2);
const manifests = existsSync(outDir) ? readdirSync(outDir).filter((f) => f.endsWith(".dslc.json")) : [];
if (manifests.length !== 1) fail(`${outDir} holds ${manifests.length || "no"} manifests (\`<model>.dslc.json\`); give the folder \`dslc build -o\` wrote`, 2);

const ort = await import(options.backend === "web" ? "onnxruntime-web" : "onnxruntime-node");
if (options.backend === "web") ort.env.wasm.numThreads = 1;  // no worker threads: the numbers of one thread

const manifest = JSON.parse(readFileSync(join(outDir, manifests[0])));
const open = (graph) => ort.InferenceSession.create(readFileSync(join(outDir, graph.file)));
// where an exported run stood (the init graph's metadata says the same, but ONNX Runtime for JavaScript
// cannot read it); a fresh build starts at epoch 0, step 0
const where = manifest.train_state ?? { epoch: 0, global_step: 0, seed: Number(options.seed ?? 0) };
if (options.seed !== undefined && Number(options.seed) !== where.seed) {
  fail(`this build continues a run with seed ${where.seed} (the manifest's \`train_state\`): leave out --seed`, 2);
}
const runSeed = BigInt(where.seed);

// onnxruntime-node ignores a feed whose name the graph lacks without a word (a misspelled name; trained values
// fed to infer.onnx, which holds the initial ones): refuse it, as onnxruntime-web does.
function run(session, feeds) {
  const unknown = Object.keys(feeds).filter((name) => !session.inputNames.includes(name));
  if (unknown.length > 0) fail(`the graph has no input ${unknown.join(", ")} (its inputs: ${session.inputNames.join(", ")})`, 1);
  return session.run(feeds);
}

if (!manifest.graphs.init) {
  fail(`model \`${manifest.model}\` has no loss, so no training graph: ${manifest.graphs.infer.file} is its inference`, 1);
}

// The init graph has no inputs: one run gives every parameter, buffer and optimizer state,
// named as the training graph's inputs.
const values = await (await open(manifest.graphs.init)).run({});

// One training graph per objective ("train", or "train.<objective>" when the model has several).
const objectives = [];
for (const [key, graph] of Object.entries(manifest.graphs)) {
  if (key.split(".")[0] === "train") objectives.push({ name: key.split(".")[1], graph, session: await open(graph) });
}

const data = checkedData(dataFile, manifestInputs(manifest.graphs));
const rows = Object.values(data)[0].shape[0];
const batchSize = Number(options["batch-size"]);
const orders = options.order ? checkedOrders(options.order) : null;
const batchDims = objectives.flatMap(({ graph }) => graph.inputs.map((t) => t.shape[0]));
const used = batchedRows("the training data", rows, batchDims);
// the evaluation graphs, one per objective, and the validation data they run on after each epoch
const evals = [];
for (const [key, graph] of Object.entries(manifest.graphs)) {
  if (key.split(".")[0] === "eval") evals.push({ name: key.split(".")[1], graph, session: await open(graph) });
}
const val = options.val ? checkedData(options.val, manifestInputs(manifest.graphs)) : null;
const valUsed = val ? batchedRows("the validation data", Object.values(val)[0].shape[0], batchDims) : 0;

// How many rows an epoch trains on: all of them, unless the build pins the batch (`dslc build --dim B=4`, for
// runtimes that need static shapes), whose graphs take batches of exactly that size only.
function batchedRows(what, count, batchDims) {
  const pinned = batchDims.filter((d) => typeof d === "number");
  if (pinned.length === 0) return count;
  if (batchSize !== pinned[0]) fail(`this build pins the batch to ${pinned[0]} rows (\`dslc build --dim\`): pass --batch-size ${pinned[0]}`, 2);
  if (count < batchSize) fail(`${what} has ${count} rows, fewer than the build's pinned batch of ${batchSize}`, 3);
  if (count % batchSize) {
    console.error(`note: each epoch leaves out the last ${count % batchSize} rows of ${what}: the build pins the batch to ${batchSize} rows`);
  }
  return count - (count % batchSize);
}

// ORDER.npz's `order`: one permutation of the rows per epoch run here
function checkedOrders(path) {
  let order;
  try {
    ({ order } = readNpz(path));
  } catch (e) {
    fail(`${path}: cannot read it as an .npz file (${e.message})`, 3);
  }
  const epochs = Number(options.epochs);
  if (!order || order.shape.length !== 2 || order.shape[0] < epochs || order.shape[1] !== rows) {
    fail(`${path}: expected an array \`order\` of shape [${epochs}, ${rows}] (a permutation of the rows per epoch), got ${order ? `[${order.shape.join(", ")}]` : "none"}`, 3);
  }
  for (let e = 0; e < epochs; e++) {
    const seen = new Set(Array.from(order.data.subarray(e * rows, (e + 1) * rows), Number).filter((i) => i >= 0 && i < rows));
    if (seen.size !== rows) fail(`${path}: \`order\` row ${e} is not a permutation of 0..${rows - 1}`, 3);
  }
  return order;
}

// The rows `indices` of an array, as an ONNX Runtime tensor.
function gather({ dtype, shape, data: all }, indices) {
  const width = shape.slice(1).reduce((a, b) => a * b, 1);
  const out = new all.constructor(indices.length * width);
  indices.forEach((row, i) => out.set(all.subarray(row * width, (row + 1) * width), i * width));
  return new ort.Tensor(dtype, out, [indices.length, ...shape.slice(1)]);
}

// A hyper-input: `lr` takes its default (schedule it as you like); `seed` must change every step, and
// dslc's is (run_seed * 1000003 + step) % 2**31. Scalars of the manifest's dtype: float32 lr, int64 seed.
function hyper(entry, step) {
  if (entry.kind === "seed") return new ort.Tensor("int64", [(runSeed * 1000003n + BigInt(step)) % 2n ** 31n], []);
  return new ort.Tensor(entry.dtype, [entry.default], []);
}

let step = where.global_step;
for (let epoch = where.epoch; epoch < where.epoch + Number(options.epochs); epoch++) {
  const order = orders
    ? Array.from(orders.data.subarray((epoch - where.epoch) * rows, (epoch - where.epoch + 1) * rows), Number)
    : Array.from({ length: rows }, (_, i) => i);
  const sums = {};
  for (let start = 0; start < used; start += batchSize) {  // the last, partial batch is kept (unless the batch is pinned)
    const batch = order.slice(start, start + batchSize);
    for (const [k, { name, graph, session }] of objectives.entries()) {
      const feeds = {};
      for (const t of graph.inputs) feeds[t.name] = gather(data[t.name], batch);
      for (const h of graph.hyper) feeds[h.name] = hyper(h, step * objectives.length + k);
      // every parameter (this objective's and the others' frozen ones), buffer and optimizer state
      for (const part of ["params", "frozen", "buffers", "state"]) {
        for (const t of graph[part]) feeds[t.name] = values[t.name];
      }
      const out = await run(session, feeds);
      // the next values of what this step updates: parameters, buffers (batch-norm statistics), state
      for (const part of ["params", "buffers", "state"]) {
        for (const t of graph[part]) values[t.name] = out[t.next];
      }
      addBatch(sums, "", name, graph.outputs, out, batch.length, objectives.length);
    }
    step++;
  }
  const logs = epochValues(sums, used);
  if (val) logs.push(...(await evaluate()));  // validation: the evaluation graphs with the current values
  console.log(`epoch ${epoch + 1}: ${logs.map(([label, value]) => `${label} ${value}`).join(" ")}`);
}

// Add one batch's loss and metrics to `sums` ({label: {t: output entry, total}}): a batch mean weighted by the
// batch's size, counts ("reduce": "sum") as they are. Named as `dslc train` logs them (`<objective>.<name>` for
// a model with several objectives).
function addBatch(sums, prefix, objective, outputs, out, size, count) {
  for (const t of outputs) {
    const label = prefix + (count > 1 ? `${objective}.${t.name}` : t.name);
    const { data } = out[t.name];
    sums[label] ??= { t, total: t.reduce === "mean" ? 0 : new Float64Array(data.length) };
    if (t.reduce === "mean") sums[label].total += size * data[0];
    else data.forEach((v, i) => { sums[label].total[i] += v; });
  }
}

// The `val_` loss and metrics: every evaluation graph (no dropout, batch norm's running statistics, no
// update) on the validation batches in order.
async function evaluate() {
  const sums = {};
  for (let start = 0; start < valUsed; start += batchSize) {
    const batch = Array.from({ length: Math.min(batchSize, valUsed - start) }, (_, i) => start + i);
    for (const { name, graph, session } of evals) {
      const feeds = {};
      for (const t of graph.inputs) feeds[t.name] = gather(val[t.name], batch);
      for (const t of [...graph.params, ...graph.buffers]) feeds[t.name] = values[t.name];
      addBatch(sums, "val_", name, graph.outputs, await run(session, feeds), batch.length, evals.length);
    }
  }
  return epochValues(sums, valUsed);
}

// Inference with the trained values: the predict graph takes them as inputs (infer.onnx holds the
// initial values as initializers, which onnxruntime-node cannot replace and ignores feeds of).
const predict = manifest.graphs.predict;
const first = Array.from({ length: Math.min(batchSize, rows) }, (_, i) => i);
const predictFeeds = {};
for (const t of predict.inputs) predictFeeds[t.name] = gather(data[t.name], first);
for (const t of [...predict.params, ...predict.buffers]) predictFeeds[t.name] = values[t.name];
const predicted = await run(await open(predict), predictFeeds);
for (const t of predict.outputs) {
  const { data: all, dims } = predicted[t.name];
  console.log(`predicted ${t.name}, first row: ${Array.from(all.slice(0, all.length / dims[0])).join(",")}`);
}
if (options.save) writeNpz(options.save, values);
