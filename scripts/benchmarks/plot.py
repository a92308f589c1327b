"""bench.png: requests/s of every contender, one panel of bars per workload."""

COLORS = {"prefork": "#1f77b4", "stdlib": "#7f7f7f", "gunicorn": "#2ca02c"}


def plot(sections, path, title):
    """Horizontal bars per workload; a log scale where the figures span decades."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    sections = [(w, [r for r in rows if r.get("rps")]) for w, rows in sections]
    sections = [(w, rows) for w, rows in sections if rows]
    if not sections:
        return False
    heights = [len(rows) * 0.28 + 0.8 for _, rows in sections]
    fig, axes = plt.subplots(len(sections), 1, figsize=(9, sum(heights) + 0.6),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, (workload, rows) in zip(axes[:, 0], sections):
        values = [r["rps"] for r in rows]
        ax.barh(range(len(rows)), values, color=[COLORS[r["family"]] for r in rows])
        ax.set_yticks(range(len(rows)), [r["contender"] for r in rows], fontsize=8)
        ax.invert_yaxis()
        if max(values) / min(values) > 30:
            ax.set_xscale("log")
        for y, value in enumerate(values):
            ax.text(value, y, f" {value:,.0f}", va="center", fontsize=7)
        ax.set_xlim(right=max(values) * (3 if ax.get_xscale() == "log" else 1.18))
        ax.set_title(f"({workload.key}) {workload.title}", fontsize=9, loc="left")
        ax.tick_params(axis="x", labelsize=7)
    axes[-1, 0].set_xlabel("requests/s (higher is better)", fontsize=8)
    fig.legend(handles=[Patch(color=c, label=f) for f, c in COLORS.items()],
               loc="upper right", fontsize=8, ncol=3)
    fig.suptitle(title, fontsize=10, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
