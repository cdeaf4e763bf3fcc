// The embedder's protocol of ../protocol.py in JavaScript, for onnxruntime-node and onnxruntime-web:
//   node driver.mjs node|web OUT_DIR DATA_FILE STEPS RUN_SEED RESULT_FILE
// DATA_FILE holds the batches as `<step>.<input>`; RESULT_FILE gets the same flat names as
// protocol.py's result (init.*, infer.*, train.<objective>.*, final.*, eval.<objective>.*, predict.*).
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { readTensors, TYPED, writeTensors } from "./tensorfile.mjs";

const [backend, outDir, dataFile, stepsArg, runSeedArg, resultFile] = process.argv.slice(2);
const ort = await import(backend === "web" ? "onnxruntime-web" : "onnxruntime-node");
if (backend === "web") ort.env.wasm.numThreads = 1;

const manifest = JSON.parse(readFileSync(join(outDir, readdirSync(outDir).find((f) => f.endsWith(".dslc.json")))));
const data = readTensors(dataFile);
const steps = Number(stepsArg);
const runSeed = BigInt(runSeedArg);
const result = {};

const tensor = (t) => new ort.Tensor(t.dtype, t.data, t.shape);
const plain = (t) => ({ dtype: t.type, shape: t.dims, data: t.data });
const scalar = (entry, value) =>
  tensor({ dtype: entry.dtype, shape: [], data: TYPED[entry.dtype].of(entry.dtype === "int64" ? BigInt(value) : value) });
const open = (file) => ort.InferenceSession.create(readFileSync(join(outDir, file)));
const entries = (g, parts) => parts.flatMap((part) => g[part] ?? []);
const objectives = (kind) =>
  Object.entries(manifest.graphs)
    .filter(([key]) => key.split(".")[0] === kind)
    .map(([key, g]) => [key.includes(".") ? key.slice(kind.length + 1) : "-", g]);

// 1. initial values of every parameter, buffer and optimizer state
const values = await (await open(manifest.graphs.init.file)).run({});
for (const [name, t] of Object.entries(values)) result[`init.${name}`] = plain(t);

// 2. inference on the first batch
const infer = manifest.graphs.infer;
const predicted = await (await open(infer.file)).run(Object.fromEntries(infer.inputs.map((t) => [t.name, tensor(data[`0.${t.name}`])])));
for (const t of infer.outputs) result[`infer.${t.name}`] = plain(predicted[t.name]);

// 3. training: every objective once per batch, feeding each `next` back
const trainers = [];
for (const [objective, g] of objectives("train")) trainers.push([objective, g, await open(g.file), []]);
for (let s = 0; s < steps; s++) {
  for (const [k, [, g, session, rows]] of trainers.entries()) {
    const feeds = Object.fromEntries(g.inputs.map((t) => [t.name, tensor(data[`${s}.${t.name}`])]));
    for (const h of g.hyper) {
      const step = BigInt(s * trainers.length + k);
      feeds[h.name] = scalar(h, h.kind === "seed" ? Number((runSeed * 1000003n + step) % 2n ** 31n) : h.default);
    }
    for (const t of entries(g, ["params", "frozen", "buffers", "state"])) feeds[t.name] = values[t.name];
    const out = await session.run(feeds);
    rows.push(g.outputs.map((t) => out[t.name]));
    for (const t of entries(g, ["params", "buffers", "state"])) values[t.name] = out[t.next];
  }
}
for (const [objective, g, , rows] of trainers) {
  g.outputs.forEach((t, i) => {  // each step's output, stacked
    const column = rows.map((row) => row[i]);
    const data = new TYPED[column[0].type](column.reduce((n, v) => n + v.data.length, 0));
    column.forEach((v, s) => data.set(v.data, s * v.data.length));
    result[`train.${objective}.${t.name}`] = { dtype: column[0].type, shape: [column.length, ...column[0].dims], data };
  });
}
for (const [name, t] of Object.entries(values)) result[`final.${name}`] = plain(t);

// 4. evaluation of the final values on the first batch
for (const [objective, g] of objectives("eval")) {
  const feeds = Object.fromEntries(g.inputs.map((t) => [t.name, tensor(data[`0.${t.name}`])]));
  for (const t of entries(g, ["params", "buffers"])) feeds[t.name] = values[t.name];
  const out = await (await open(g.file)).run(feeds);
  for (const t of g.outputs) result[`eval.${objective}.${t.name}`] = plain(out[t.name]);
}

// 5. inference with the final values, fed as inputs of the predict graph
const predict = manifest.graphs.predict;
const predictFeeds = Object.fromEntries(predict.inputs.map((t) => [t.name, tensor(data[`0.${t.name}`])]));
for (const t of entries(predict, ["params", "buffers"])) predictFeeds[t.name] = values[t.name];
const last = await (await open(predict.file)).run(predictFeeds);
for (const t of predict.outputs) result[`predict.${t.name}`] = plain(last[t.name]);
writeTensors(resultFile, result);
// onnxruntime-web keeps node alive for seconds after the work is done
process.exit(0);
