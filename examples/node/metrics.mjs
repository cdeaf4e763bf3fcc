// Epoch values of a dslc model's loss and metrics from their summed batch values, as the manifest says for each
// output (README, "Embedding the graphs", step 2; dslc/runtime/metrics.py is the reference):
// a batch mean's weighted mean; precision, recall or F1 from the summed confusion matrix (scikit-learn's,
// zero where 0/0); an `auc` from the summed counts over thresholds (Keras's). The summed matrices without a
// value (`confusion_matrix`) are left out.

// [[label, value]] of `sums` ({label: {t: manifest output entry, total}}) over `rows` examples.
export function epochValues(sums, rows) {
  const values = [];
  for (const [label, { t, total }] of Object.entries(sums)) {
    if (t.reduce === "mean") values.push([label, total / rows]);
    else if (t.counts === "confusion_matrix" && t.value) values.push([label, fromConfusion(total, t.shape[0], t.value, t.average)]);
    else if (t.counts === "thresholds") values.push([label, fromThresholds(total, t.shape, t.curve, t.summation_method, t.average)]);
  }
  return values;
}

const ratio = (num, den) => (den > 0 ? num / den : 0);
const sum = (values) => values.reduce((a, b) => a + b, 0);
const range = (n) => Array.from({ length: n }, (_, i) => i);

// Per class tp / (tp + fp), tp / (tp + fn), 2tp / (2tp + fp + fn) of a [K, K] matrix (rows: the true class);
// `binary` class 1's, `micro` of tp, fp, fn summed, `macro` the mean over the classes that occur, `weighted`
// by support.
function fromConfusion(c, k, value, average) {
  const tp = range(k).map((i) => c[i * k + i]);
  const predicted = range(k).map((j) => sum(range(k).map((i) => c[i * k + j])));
  const support = range(k).map((i) => sum(range(k).map((j) => c[i * k + j])));
  const score = (t, p, s) => ({ precision: ratio(t, p), recall: ratio(t, s), f1: ratio(2 * t, p + s) })[value];
  if (average === "micro") return score(sum(tp), sum(predicted), sum(support));
  const perClass = range(k).map((i) => score(tp[i], predicted[i], support[i]));
  if (average === "binary") return perClass[1];
  if (average === "weighted") return ratio(sum(perClass.map((v, i) => v * support[i])), sum(support));
  const present = range(k).filter((i) => support[i] + predicted[i] > 0);
  return present.length ? sum(present.map((i) => perClass[i])) / present.length : 0;
}

// [K, T, 2, 2] counts (column, threshold ascending, true class, predicted class): each column's area, then
// `macro` their mean over the columns whose curve is defined, `weighted` by positives, `micro` the area of
// the counts summed over the columns; NaN where no curve is defined.
function fromThresholds(c, [k, t], curve, summation, average) {
  const column = (j) => c.subarray(j * t * 4, (j + 1) * t * 4);
  if (average === "micro") {
    const summed = new Float64Array(t * 4);
    range(k).forEach((j) => column(j).forEach((v, i) => { summed[i] += v; }));
    return curveArea(summed, t, curve, summation);
  }
  const areas = range(k).map((j) => [curveArea(column(j), t, curve, summation), column(j)[3] + column(j)[2]]);
  const defined = areas.filter(([area]) => !Number.isNaN(area));
  if (defined.length === 0) return NaN;
  if (average === "weighted") return sum(defined.map(([a, p]) => a * p)) / sum(defined.map(([, p]) => p));
  return sum(defined.map(([a]) => a)) / defined.length;
}

// ROC (x = fp / negatives, y = recall) or PR (x = recall, y = precision) by trapezoids (`interpolation`; for
// PR, Davis & Goadrich's interpolation of tp against tp + fp), `minoring`, `majoring` or `step`.
function curveArea(c, t, curve, summation) {
  const at = (i, truth, pred) => c[i * 4 + truth * 2 + pred];
  const tp = range(t).map((i) => at(i, 1, 1)), fp = range(t).map((i) => at(i, 0, 1));
  const positives = tp[0] + at(0, 1, 0), negatives = fp[0] + at(0, 0, 0);
  if (positives === 0 || (curve === "roc" && negatives === 0)) return NaN;
  const steps = range(t - 1);
  if (curve === "pr" && summation === "interpolation") {
    const p = range(t).map((i) => tp[i] + fp[i]);
    return sum(steps.map((i) => {
      const dtp = tp[i] - tp[i + 1], slope = ratio(dtp, p[i] - p[i + 1]);
      const log = p[i] > 0 && p[i + 1] > 0 ? Math.log(p[i] / p[i + 1]) : 0;
      return slope * (dtp + (tp[i + 1] - slope * p[i + 1]) * log);
    })) / positives;
  }
  const x = curve === "roc" ? fp.map((v) => v / negatives) : tp.map((v) => v / positives);
  const y = curve === "roc" ? tp.map((v) => v / positives) : tp.map((v, i) => ratio(v, v + fp[i]));
  const height = { interpolation: (i) => (y[i] + y[i + 1]) / 2, minoring: (i) => Math.min(y[i], y[i + 1]),
    majoring: (i) => Math.max(y[i], y[i + 1]), step: (i) => y[i] }[summation];
  return sum(steps.map((i) => (x[i] - x[i + 1]) * height(i)));
}
