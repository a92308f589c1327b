"""The final table: one row per operation (Markdown, as the README quotes it)."""


def table(figures, hosts):
    """Rows: operation, requests sent, failed (and why), seconds each host
    was out of rotation (HAProxy: DOWN), seconds the operation took."""
    head = ["operation", "requests sent", "failed",
            *[f"{host} out (s)" for host in hosts], "took (s)"]
    rows = [head, ["---"] * len(head)]
    for f in figures:
        failed = str(f.failed)
        if f.reasons:
            failed += " (" + ", ".join(f"{r}: {n}" for r, n in f.reasons.items()) + ")"
        rows.append([f.title, str(f.sent), failed,
                     *[f"{f.out.get(host, 0.0):.2f}" for host in hosts], f"{f.seconds:.1f}"])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)
