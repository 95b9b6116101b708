"""Plots the growth section of a polos bench run (the JSON written by `cargo bench --bench polos`).

Four panels against the number of schedules (log scale): burst rate (ours and raw publish),
cold start (ours and raw bucket load) with memory per schedule, upsert rate with schedules
already stored (ours and raw KV CAS), failover time.
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def series(rows, metric):
    points = sorted((r["size"], r["value"]) for r in rows if r.get("metric") == metric and r.get("value") is not None)
    return [p[0] for p in points], [p[1] for p in points]


def main(src, dst):
    doc = json.load(open(src))
    rows = [r for r in doc["results"] if r.get("section") == "growth"]
    if not rows:
        sys.exit(f"{src} has no growth figures: run `cargo bench --bench polos -- growth`")
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    panels = [
        (axes[0][0], "Burst at one instant", "fires or messages / s",
         [("burst_ours_per_s", "polos fires"), ("burst_raw_per_s", "raw pipelined publish")]),
        (axes[0][1], "Cold start", "seconds",
         [("load_ours_s", "polos: loaded, planned, armed"), ("load_raw_s", "raw bucket load")]),
        (axes[1][0], "Upserts with schedules already stored", "writes / s",
         [("upserts_ours_per_s", "polos API (64 in flight)"), ("upserts_raw_per_s", "raw KV CAS (64 in flight)")]),
        (axes[1][1], "Failover: leader killed to standby's first fire", "seconds (lease TTL 1 s)",
         [("failover_s", "worst of 2 kills")]),
    ]
    for ax, title, unit, lines in panels:
        for metric, label in lines:
            x, y = series(rows, metric)
            if x:
                ax.plot(x, y, marker="o", label=label)
        ax.set_xscale("log")
        ax.set_ylim(bottom=0)
        ax.set_title(title)
        ax.set_xlabel("schedules")
        ax.set_ylabel(unit)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    x, y = series(rows, "bytes_per_schedule")
    if x:
        twin = axes[0][1].twinx()
        twin.plot(x, y, marker="s", color="gray", linestyle="--", label="bytes / schedule (RSS)")
        twin.set_ylabel("bytes per schedule")
        twin.set_ylim(bottom=0)
        twin.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"polos: how cost grows ({doc.get('date', '')[:10]}, {doc.get('build')}, nats-server {doc.get('nats_server')}, 2 shared cores)")
    fig.tight_layout()
    fig.savefig(dst, dpi=100)
    print(f"wrote {dst}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "target/bench.json", sys.argv[2] if len(sys.argv) > 2 else "docs/bench.png")
