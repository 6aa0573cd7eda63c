"""What `sparsebias info` and `compress` print about a bundle."""

from __future__ import annotations


def bundle_summary(bundle, per_layer: bool = True) -> str:
    """Model, recipe, sparsity, cost, scores, training, export check and mitigations; per layer too."""
    m = bundle.manifest
    lines = [f"bundle       {bundle.path}",
             f"model        {m['architecture']}, {len(m['attributes'])} attribute(s), input {m['input']['shape'][1:]}",
             f"recipe       {m['recipe']['source']}",
             f"sparsity     {m['sparsity']['overall']:.4f} overall"]
    if "flops" in m:  # bundles from sparsebias 0.1.0 before FLOPs were recorded lack it
        lines.append(f"cost         {m['flops']['dense_macs'] / 1e9:.3f} GMACs dense, "
                     f"{m['flops']['sparse_macs'] / 1e9:.3f} sparse ({m['flops']['reduction']:.1f}x fewer) per image")
    for split, scores in m["metrics"].items():
        lines.append(f"{split:12s} mean accuracy {scores['accuracy']:.4f}  mean AUC {scores['auc']:.4f}")
    if "quantization" in m:
        q = m["quantization"]
        change = q["change"]["test"]
        how = f"{q['calibration']['samples']} calibration images" if "calibration" in q else q["ranges"]
        lines.append(f"precision    {q['precision']} for {q.get('target', 'deepsparse')}, {q['method']} ({how}); "
                     f"vs the FP32 parent on test: accuracy {change['accuracy']:+.4f}, AUC {change['auc']:+.4f}")
    if "quantization_aware_training" in m:
        a = m["quantization_aware_training"]
        lines.append(f"qat          from epoch {a['start_epoch']:g}; {a['graph']} holds its ranges "
                     f"(`sparsebias quantize` uses them)")
    t = m["training"]
    lines.append(f"training     best epoch {t['best_epoch']} of {t['epochs']}, {t['seconds']:.0f} s, seed {t['seed']}")
    lines.append(f"onnx check   max |onnx - torch| = {m['export']['max_abs_diff_vs_torch']:.2e}"
                 + (" (of the FP32 parent)" if "quantization" in m else ""))
    if "quantization" in m:
        v = m["quantization"]["verified"]
        differ = v.get("decisions_differ_vs_simulated")   # absent from bundles quantized by earlier versions
        lines.append(f"int8 check   mean |int8 - simulated in float| = {v['mean_abs_diff_vs_simulated']:.2e} "
                     f"(vs FP32: {v['mean_abs_diff_vs_fp32']:.2e}) on {v['split']}"
                     + (f"; decisions differ on {differ:.2%}" if differ is not None else ""))
    mitigations = m.get("mitigations", {})
    if "thresholds" in mitigations:
        lines.append(f"thresholds   calibrated on {mitigations['thresholds']['split']}")
    if "overrides" in mitigations:
        o = mitigations["overrides"]
        lines.append(f"overrides    {o['rows']} row(s), top {o['budget']:.0%} by dense uncertainty, {o['label']} labels, "
                     f"{len(o['attributes'])} attribute(s)")
    if per_layer:
        lines.append("per-layer sparsity:")
        lines += [f"  {name:40s} {value:.4f}" for name, value in m["sparsity"]["per_layer"].items()]
    return "\n".join(lines)
