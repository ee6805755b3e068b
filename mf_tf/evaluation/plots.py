"""Benchmark and demo figures (matplotlib, Agg backend; PNG files).

  plot_jdr_vs_shots   paper Figure 7: JDR against the number of finetuning frames K, per method,
                      for the mean and typical joints, with No-Fusion, NaiveFuse^full and the
                      calibrated MetaFuse^0 as horizontal references.
  plot_fusion_heatmaps  paper Figure 6: one joint in one target view, ground truth, initial and
                      fused heatmaps, and the heatmap warped from every other view, W_{u->v} h_u
                      reshaped to H x W (the epipolar line of the source view's evidence).
  plot_method_bars    JDR (all / visible / occluded) and MPJPE per method, for the demo.
"""

from __future__ import annotations

import io
import os

import matplotlib

matplotlib.use("Agg")  # Files only; no display on servers and CI.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mf_tf import files  # noqa: E402

_STYLE = {
    "naive": dict(color="tab:green", marker="s", label="NaiveFuse$^K$"),
    "affine": dict(color="tab:blue", marker="^", label="AffineFuse$^K$"),
    "metafuse": dict(color="tab:red", marker="o", label="MetaFuse$^K$"),
}
DEFAULT_GROUPS = ("mean", "elbow", "wrist", "knee", "ankle")
_MARKERS = ("o", "x", "+", "s")  # Heatmap markers, largest first so coinciding ones stay visible.


def _group_jdr(result: dict, group: str) -> float:
  if group == "mean":
    return float(result["jdr_mean"])
  values = [v for joint, v in result["jdr_per_joint"].items()
            if joint in (group, "l" + group, "r" + group) and v is not None]
  return float(np.mean(values)) if values else float("nan")


def _save(fig, path: str) -> str:
  """Renders `fig` in memory, then writes it atomically (a failed save keeps the old figure)."""
  buffer = io.BytesIO()
  try:
    fig.savefig(buffer, format=os.path.splitext(path)[1][1:].lower() or "png", dpi=110,
                bbox_inches="tight")
  finally:
    plt.close(fig)
  return files.write_atomic(path, buffer.getvalue())


def plot_jdr_vs_shots(rig_results: dict, path: str, groups=DEFAULT_GROUPS,
                      title: str | None = None) -> str:
  """Figure 7: JDR against K for each method, one panel per joint group.

  Args:
    rig_results: {method: {K (str): result dict}} of one rig (benchmark results.json schema).
    path: Output PNG.
    groups: "mean" and/or joint names without side ("wrist" averages lwrist and rwrist).
    title: Figure title.

  Returns:
    `path`.
  """
  fig, axes = plt.subplots(1, len(groups), figsize=(3.3 * len(groups), 3.4), squeeze=False)
  shots_all = sorted({int(k) for m in ("naive", "affine", "metafuse")
                      for k in rig_results.get(m, {}) if k.isdigit() and int(k) > 0})
  for ax, group in zip(axes[0], groups):
    for method, style in _STYLE.items():
      points = sorted((int(k), _group_jdr(r, group)) for k, r in rig_results.get(method, {}).items()
                      if k.isdigit() and int(k) > 0)
      if points:
        xs, ys = zip(*points)
        ax.plot(xs, ys, linewidth=1.8, markersize=5, **style)
    references = (
        (rig_results.get("no_fusion", {}).get("0"), dict(color="grey", linestyle="--",
                                                          label="No-Fusion")),
        (rig_results.get("naive", {}).get("full"), dict(color="grey", linestyle="-",
                                                         label="NaiveFuse$^{full}$")),
        (rig_results.get("metafuse", {}).get("0"), dict(color="tab:red", linestyle=":",
                                                         label="MetaFuse$^0$ (calibrated)")),
    )
    for result, style in references:
      if result is not None:
        ax.axhline(_group_jdr(result, group), linewidth=1.4, **style)
    if shots_all:
      ax.set_xscale("log")
      ax.set_xticks(shots_all)
      ax.set_xticklabels([str(k) for k in shots_all])
      ax.minorticks_off()
    ax.set_title("average" if group == "mean" else group)
    ax.set_xlabel("K (finetuning frames)")
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel("JDR (%)")
  handles, labels = axes[0][0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False,
             bbox_to_anchor=(0.5, -0.08))
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  return _save(fig, path)


def plot_fusion_heatmaps(rows, path: str, title: str | None = None, markers=None) -> str:
  """Figure 6: rows of heatmaps (ground truth, initial, fused; warped from each other view).

  Args:
    rows: Sequence of rows, each a sequence of (panel title, [H, W] array).
    path: Output PNG.
    title: Figure title.
    markers: Optional {label: ((x, y) heatmap px, matplotlib color)} drawn on every panel
      (e.g. the true joint and the estimates), as a hollow circle, a cross, a plus, a square.

  Returns:
    `path`.
  """
  columns = max(len(row) for row in rows)
  fig, axes = plt.subplots(len(rows), columns, figsize=(2.8 * columns, 2.9 * len(rows)),
                           squeeze=False)
  for ax in axes.ravel():
    ax.axis("off")
  for row_axes, row in zip(axes, rows):
    for ax, (name, image) in zip(row_axes, row):
      image = np.asarray(image, np.float32)
      shown = ax.imshow(image, cmap="viridis", interpolation="nearest")
      fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=6)
      for number, (label, ((x, y), color)) in enumerate((markers or {}).items()):
        ax.plot([x], [y], marker=_MARKERS[number % len(_MARKERS)], linestyle="none",
                markerfacecolor="none", markeredgecolor=color, markersize=12 - 2 * number,
                markeredgewidth=1.8, label=label)
      ax.set_xlim(-0.5, image.shape[1] - 0.5)
      ax.set_ylim(image.shape[0] - 0.5, -0.5)
      ax.set_title(name, fontsize=9)
  if markers:
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=True,
               facecolor="dimgrey", labelcolor="white", bbox_to_anchor=(0.5, -0.04))
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  return _save(fig, path)


def plot_method_bars(results: dict, path: str, title: str | None = None) -> str:
  """JDR (all, visible, occluded) and MPJPE bars per method.

  Args:
    results: {method label: result dict (`evaluate.evaluate_fusion`)}.
    path: Output PNG.
    title: Figure title.

  Returns:
    `path`.
  """
  names = list(results)
  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
  width = 0.8 / 3
  x = np.arange(len(names))
  for offset, (key, label) in enumerate((("jdr_mean", "all"), ("jdr_visible", "visible"),
                                         ("jdr_occluded", "occluded"))):
    values = [results[n][key] if results[n][key] is not None else np.nan for n in names]
    bars = left.bar(x + (offset - 1) * width, values, width, label=label)
    left.bar_label(bars, fmt="%.1f", fontsize=7)
  left.set_xticks(x, names, rotation=15)
  left.set_ylabel("JDR (%)")
  left.set_ylim(0, 118)  # Headroom for the legend above the bars.
  left.legend(fontsize=8, loc="upper center", ncol=3)
  left.set_title("2D joint detection rate")
  width = 0.8 / 2
  for offset, (key, label) in enumerate((("mpjpe_triangulation_mm", "triangulation"),
                                         ("mpjpe_pictorial_mm", "pictorial"))):
    values = [results[n][key] if results[n][key] is not None else np.nan for n in names]
    bars = right.bar(x + (offset - 0.5) * width, values, width, label=label)
    right.bar_label(bars, fmt="%.0f", fontsize=7)
  right.set_xticks(x, names, rotation=15)
  right.set_ylabel("MPJPE (mm)")
  finite = [results[n][k] for n in names for k in ("mpjpe_triangulation_mm", "mpjpe_pictorial_mm")
            if results[n][k] is not None and np.isfinite(results[n][k])]
  right.set_ylim(0, 1.25 * max(finite) if finite else 1.0)
  right.legend(fontsize=8, loc="upper center", ncol=2)
  right.set_title("3D error")
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  return _save(fig, path)
