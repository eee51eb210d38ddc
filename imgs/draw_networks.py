"""Draw Open-Unmix (UMX) and CrossNet-Open-Unmix (X-UMX) side by side: imgs/umx-vs-xumx.png.

    python imgs/draw_networks.py [OUTPUT.png]

Deterministic (no random layout, no timestamps in the PNG). Both panels have the same rows;
X-UMX adds the two crossing averages: the mean of the fc1 outputs, which feeds every BLSTM, and
the mean of the skip concatenations [own fc1 output, BLSTM output], which feeds every fc2.
"""
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

SOURCES = ("bass", "drums", "vocals", "other")
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "umx-vs-xumx.png")

# (row key, box label, colour); the rows with no label are the crossings (empty in UMX)
STAGES = [
    ("input", "input norm\n(+mean, ×scale)", "#dbe9f6"),
    ("fc1", "fc1 + BN + tanh", "#c6dbef"),
    ("cross1", None, None),
    ("lstm", "3-layer BLSTM", "#fdd0a2"),
    ("concat", "skip concat\n[fc1, BLSTM]", "#e5e5e5"),
    ("cross2", None, None),
    ("fc2", "fc2 + BN + ReLU", "#c7e9c0"),
    ("fc3", "fc3 + BN", "#a1d99b"),
    ("out", "output\n(×scale, +mean)", "#dadaeb"),
    ("mask", "ReLU → mask", "#bcbddc"),
    ("est", "mask × mixture\n|X| → estimate", "#fff5b0"),
]
COL_DX = 2.5      # distance between source columns
BOX_W = 1.8
BOX_H = 0.62
ROW_DY = 1.0
CROSS = "#d62728"


def row_y(name):
    """Vertical position of a row (top row at y = -1; the shared STFT box sits at 0)."""
    return -1.0 - ROW_DY * [s[0] for s in STAGES].index(name)


def box(ax, x, y, w, h, text, colour, edge="#333333", lw=1.0, fontsize=8.5, weight="normal"):
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                facecolor=colour, edgecolor=edge, linewidth=lw))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, weight=weight)


def arrow(ax, x0, y0, x1, y1, colour="#333333", lw=1.0, zorder=2):
    ax.annotate("", xy=(x1, y1), xytext=(x0, y0), zorder=zorder,
                arrowprops=dict(arrowstyle="-|>", color=colour, lw=lw, shrinkA=0, shrinkB=0,
                                mutation_scale=9))


def panel(ax, title, crossing):
    xs = [COL_DX * i for i in range(len(SOURCES))]
    left, right = xs[0] - BOX_W / 2, xs[-1] + BOX_W / 2
    mid = (left + right) / 2
    half = BOX_H / 2
    # shared front end
    box(ax, mid, 0.0, right - left, BOX_H,
        "mixture audio → STFT magnitude |X| (cropped to max_bin), one copy per source",
        "#f0f0f0", fontsize=9)
    for i, (x, src) in enumerate(zip(xs, SOURCES)):
        ax.text(x, 0.62, src, ha="center", va="bottom", fontsize=10, weight="bold")
        arrow(ax, x, -half, x, row_y("input") + half)
        for name, label, colour in STAGES:
            if label:
                box(ax, x, row_y(name), BOX_W, BOX_H, label, colour)
        # straight connections along the column
        chain = ["input", "fc1", "lstm", "concat", "fc2", "fc3", "out", "mask", "est"]
        for a, b in zip(chain, chain[1:]):
            if crossing and (a, b) in (("fc1", "lstm"), ("concat", "fc2")):
                continue  # goes through the average below
            arrow(ax, x, row_y(a) - half, x, row_y(b) + half)
        # the skip connection: the source's OWN fc1 output to its concatenation
        sx = x + BOX_W / 2 + 0.18
        y0, y1 = row_y("fc1"), row_y("concat")
        # drawn over the crossing bar: the skip bypasses the average
        ax.plot([x + BOX_W / 2, sx, sx], [y0, y0, y1], color="#555555", lw=1.1, ls="--", zorder=5)
        arrow(ax, sx, y1, x + BOX_W / 2, y1, colour="#555555", zorder=5)
        if i == 0:
            ax.text(sx + 0.07, (row_y("lstm") + row_y("concat")) / 2, "skip (own fc1)",
                    rotation=90, fontsize=7, color="#555555", va="center", ha="left")
    if crossing:
        crossings = (
            ("cross1", "fc1", "lstm", "crossing 1: mean over sources of the fc1 outputs → every BLSTM"),
            ("cross2", "concat", "fc2",
             "crossing 2: mean over sources of the concatenations → every fc2"))
        for name, src_row, dst_row, text in crossings:
            y = row_y(name)
            box(ax, mid, y, right - left, BOX_H * 0.8, text, "#fde0dd", edge=CROSS, lw=1.6,
                fontsize=8.5, weight="bold")
            for x in xs:
                arrow(ax, x, row_y(src_row) - half, x, y + BOX_H * 0.4, colour=CROSS, lw=1.2)
                arrow(ax, x, y - BOX_H * 0.4, x, row_y(dst_row) + half, colour=CROSS, lw=1.2)
    else:
        for name in ("cross1", "cross2"):
            ax.text(mid, row_y(name), "(no crossing: the four networks stay independent)",
                    ha="center", va="center", fontsize=8, color="#777777", style="italic",
                    bbox=dict(facecolor="white", edgecolor="none", pad=1.5), zorder=6)
    ax.set_title(title, fontsize=13, weight="bold", pad=14)
    ax.set_xlim(left - 0.3, right + 0.5)
    ax.set_ylim(row_y("est") - 0.7, 1.1)
    ax.set_aspect("equal")
    ax.axis("off")


def draw(path=DEFAULT_OUT):
    fig, axes = plt.subplots(1, 2, figsize=(17, 9.2))
    panel(axes[0], "UMX: four independent Open-Unmix networks", crossing=False)
    panel(axes[1], "X-UMX: the same networks, bridged by two averages", crossing=True)
    fig.text(0.5, 0.015, "Per source, X-UMX keeps its own weights (fc1, BLSTM, fc2, fc3, BN, "
             "scales); only the inputs of the BLSTMs and of fc2 are shared averages. "
             "After the network: multichannel Wiener filter and inverse STFT.",
             ha="center", fontsize=9, color="#333333")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp")
    fig.savefig(tmp, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)
    os.replace(tmp, path)
    return path


if __name__ == "__main__":
    print(draw(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUT))
