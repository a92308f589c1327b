"""bench.png: requests/s of every contender, one panel of bars per workload;
scaling.png: the load step over time."""

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


def plot_step(sections, path, title):
    """scaling.png: the load step, one column per contender side by side --
    above, the workers (and the clients wanted) over time; below, the p99 of
    each interval's requests (log scale), the same axes in every column."""
    steps = [(w, [r for r in rows if "series" in r]) for w, rows in sections if w.step]
    steps = [(w, rows) for w, rows in steps if rows]
    if not steps:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workload, rows = steps[0]
    fig, axes = plt.subplots(2, len(rows), figsize=(5.5 * len(rows), 6.5), sharex=True,
                             sharey="row", squeeze=False)
    for column, row in enumerate(rows):
        series = row["series"]
        t = [s["t"] for s in series]
        top, bottom = axes[0, column], axes[1, column]
        top.step(t, [s["clients"] for s in series], where="post", color="#bbbbbb",
                 label="clients wanted")
        top.plot(t, [s["workers"] for s in series], color=COLORS[row["family"]],
                 drawstyle="steps-post", label="workers (master's children)")
        top.set_title(row["contender"], fontsize=9, loc="left")
        top.legend(fontsize=7, loc="upper right")
        points = [(s["t"], s["p99_ms"]) for s in series if s["p99_ms"]]
        bottom.plot([p[0] for p in points], [p[1] for p in points], ".-", markersize=3,
                    color="#d62728", label="p99 of the requests ending in each 250 ms")
        bottom.set_yscale("log")
        bottom.axhline(50, color="#bbbbbb", linestyle=":", label="the handler's 50 ms")
        bottom.legend(fontsize=7, loc="center right")
        bottom.set_xlabel("seconds", fontsize=8)
        for ax in (top, bottom):
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("workers / clients", fontsize=8)
    axes[1, 0].set_ylabel("p99 latency, ms (log)", fontsize=8)
    fig.suptitle(f"{title}\n({workload.key}) {workload.title}", fontsize=9, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
