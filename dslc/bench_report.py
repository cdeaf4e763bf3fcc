"""`dslc bench`'s printed report, from the result's JSON (`BenchResult.as_json`): one line per column with
the median and the 10th-90th percentile spread of the training step and of inference, the ratio of dslc
to each, the checks each column passed before it was timed, the roofline bound and the machine's state."""
from __future__ import annotations

from dslc.bench_machine import scaling_text

COLUMN_NAMES = {"dslc": "dslc", "twin": "twin", "torch-onnx": "torch.onnx.export", "torch": "torch",
                "torch-compile": "torch-compile", "jax": "jax"}


def _cell(timing: dict | None, ratio: float | None = None) -> str:
    if timing is None:
        return f"{'—':>32}"
    spread = f"{timing['median_ms']:9.3f} [{timing['p10_ms']:.3f}–{timing['p90_ms']:.3f}]"
    return f"{spread:>24}" + (f"  {ratio:5.2f}" if ratio is not None else " " * 7)


def report_lines(r: dict) -> list[str]:
    check = r["machine_check"]
    threads = f"{r['threads']} thread{'s' if r['threads'] > 1 else ''}"
    lines = [f"{r['model']}: batch {r['batch_size']} (inference {r['infer_batch_size']}), {threads}, "
             f"{r['steps']} steps per column; GEMM peak {r['gemm_gflops']:.0f} GFLOP/s, memory bandwidth "
             f"{r['bandwidth_gbs']:.1f} GB/s",
             f"machine: {scaling_text(check)}, load average {check['load_average']:.1f} on {check['cores']} cores — "
             + ("CONTENDED: ratios read closer to 1 than on an idle machine" if check["contended"] else "not contended"),
             f"  {'':<18}{'train step ms [p10–p90]':>24}  ratio{'inference ms [p10–p90]':>26}  ratio"]
    dslc = {"train": {"median_ms": r["train_step_ms"], "p10_ms": r["train_step_p10_ms"], "p90_ms": r["train_step_p90_ms"]},
            "infer": {"median_ms": r["infer_ms"], "p10_ms": r["infer_p10_ms"], "p90_ms": r["infer_p90_ms"]}}
    lines.append(f"  {'dslc':<18}{_cell(dslc['train'])}{_cell(dslc['infer'])}")
    for name, c in r["columns"].items():
        if c["error"]:
            lines.append(f"  {COLUMN_NAMES[name]:<18}not timed: {c['error']}")
        else:
            lines.append(f"  {COLUMN_NAMES[name]:<18}{_cell(c['train'], c['train_ratio'])}{_cell(c['infer'], c['infer_ratio'])}")
    for which, label in (("train", "training step"), ("infer", "inference")):
        fastest = r["fastest_peer"][which]
        if fastest:
            lines.append(f"  fastest peer, {label}: {fastest['column']} {fastest['median_ms']:.3f} ms, "
                         f"ratio {fastest['ratio']:.2f}")
    utilization = ("not reported (see the warnings)" if r["flop_utilization"] is None
                   else f"{100 * r['flop_utilization']:.0f}% of the GEMM peak")
    lines.append(f"  training step: {r['train_gflop_per_step']:.3f} GFLOP, {utilization}; moves at least "
                 f"{r['train_mb_per_step']:.2f} MB; roofline bound {r['roofline_ms']:.3f} ms "
                 f"(the step takes {1 / r['roofline_fraction']:.1f}× the bound)")
    checked = [f"{name} {_check_text(c['check'])}" for name, c in r["columns"].items() if c["check"] and name != "torch-onnx"]
    if checked:
        lines.append("  first step against dslc's: " + "; ".join(checked))
    if r["torch_onnx_infer_ms"] is not None:
        lines.append(f"  torch.onnx.export + ONNX Runtime: outputs match dslc's (largest difference "
                     f"{r['torch_onnx_check']['max_abs_diff']:.2g})")
    if r["train_peak_rss_mb"] is not None:
        ratio = "n/a" if r["rss_ratio"] is None else f"{r['rss_ratio']:.2f}"
        lines.append(f"  train RSS   {r['train_rss_increase_mb']:8.1f} MB   torch {r['torch_train_rss_increase_mb']:8.1f} MB"
                     f"   ratio {ratio}   peak-RSS increase over the imports in a fresh process, {r['memory_steps']} "
                     f"steps (peaks: dslc {r['train_peak_rss_mb']:.0f} MB, torch {r['torch_train_peak_rss_mb']:.0f} MB)")
    lines += [f"warning: {note}" for note in r["warnings"]]
    return lines


def _check_text(check: dict) -> str:
    verdict = "passed" if check["passed"] else "FAILED"
    return (f"{verdict} (loss {check['loss']['rel_diff']:.1g} rel, params {check['params']['max_abs_diff']:.1g} abs, "
            f"update L2 {check['params']['update_rel_l2']:.1g} rel, inference {check['infer']['max_abs_diff']:.1g} abs)")
