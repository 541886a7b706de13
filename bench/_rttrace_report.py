"""Analyse a bench/realtime.py --trace directory: per-stage latencies of every
delivery, the slow ones grouped into stall windows, and what happened on the
machine around each window (GC pauses, event loop and thread lags per process,
CPU busy/pressure, PostgreSQL wait events, busiest processes).

    python bench/_rttrace_report.py DIR [--slow 0.1]
"""
from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path


def pct(values, q):
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def load(directory: Path):
    procs = {}
    for path in sorted(directory.glob("*.jsonl")):
        role, pid = path.stem.rsplit("-", 1)
        procs[(role, int(pid))] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return procs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--slow", type=float, default=0.1)
    args = parser.parse_args()
    d = Path(args.dir)
    meta = json.loads((d / "meta.json").read_text())
    t0, t1 = meta["t0"], meta["t1"]
    agent_user = {i: pk for i, pk in enumerate(meta["agents"])}
    procs = load(d)
    names = {}
    asgi = sorted(pid for role, pid in procs if role == "asgi")
    for role, pid in procs:
        names[(role, pid)] = f"asgi{asgi.index(pid)}" if role == "asgi" else f"{role}{pid}"

    pub, dlv, rcv = {}, {}, []
    vis = defaultdict(dict)  # text -> stage -> time
    events = []  # (t, proc, kind, value)
    for key, recs in procs.items():
        name = names[key]
        for r in recs:
            kind = r[0]
            if kind == "pub":
                pub[r[1]] = {"text": r[2], "commit": r[3], "pub0": r[4], "pub1": r[5], "end": r[6], "proc": name}
            elif kind == "dlv":
                dlv[(r[1], r[2])] = (r[3], r[4], name)
            elif kind == "rcv":
                rcv.append((r[1], r[2], r[3]))
            elif kind in ("w_recv", "w_done", "ing1"):
                vis[r[2]][kind] = r[1]
                vis[r[2]]["proc"] = name
            elif kind == "ing0":
                vis[r[2]]["ing0"] = r[1]
                vis[r[2]]["thread"] = r[3]
            elif kind == "gc":
                events.append((r[1], name, "gc", r[2], r[3]))
            elif kind in ("lag", "tlag"):
                events.append((r[1] - r[2], name, kind, r[2], None))
            elif kind in ("cpu", "pg", "procs", "bgw"):
                events.append((r[1], name, kind, r[2:], None))
    events.sort(key=lambda e: e[0])

    rows = []
    for eid, idx, t in rcv:
        if not (t0 <= t <= t1 + 5):
            continue
        p = pub.get(eid)
        if p is None:
            continue
        user = agent_user.get(idx)
        dv = dlv.get((eid, user))
        row = {"t": t, "idx": idx, "kind": "visitor" if (p["text"] or "").startswith("v ") else "api",
               "total": t - p["pub0"], "publish": p["pub1"] - p["pub0"], "pubproc": p["proc"],
               "after_tail": p["end"] - p["pub1"]}
        if dv:
            row.update(layer=dv[0] - p["pub1"], send=dv[1] - dv[0], client=t - dv[1], asgi=dv[2])
        if row["kind"] == "visitor":
            v = vis.get(p["text"], {})
            sent = float(p["text"].split()[1])
            row["e2e"] = t - sent
            if "w_recv" in v:
                row.update(to_server=v["w_recv"] - sent, queue=v.get("ing0", v["w_recv"]) - v["w_recv"],
                           ingest=p["commit"] - v.get("ing0", v["w_recv"]), commit_to_pub=p["pub0"] - p["commit"],
                           thread=v.get("thread"), wproc=v.get("proc"))
        rows.append(row)
    if not rows:
        print("no deliveries matched")
        return
    print(f"{len(rows)} deliveries traced; window {t1 - t0:.1f} s")
    stages = ["to_server", "queue", "ingest", "commit_to_pub", "publish", "layer", "send", "client", "total", "e2e",
              "after_tail"]
    for kind in ("api", "visitor"):
        sel = [r for r in rows if r["kind"] == kind]
        print(f"\n{kind}: {len(sel)} deliveries")
        for s in stages:
            vals = [r[s] for r in sel if s in r]
            if vals:
                print(f"  {s:14s} p50 {pct(vals, .5) * 1000:7.1f}  p99 {pct(vals, .99) * 1000:7.1f}  "
                      f"max {max(vals) * 1000:7.1f} ms")

    ingx = [r for (role, _pid), records in procs.items() if role == "asgi" for r in records if r[0] == "ingx"]
    if ingx:  # RT_TRACE_IO=1
        print(f"\nvisitor ingest threads (RT_TRACE_IO): {len(ingx)} messages, "
              f"{sum(r[5] for r in ingx) / len(ingx):.1f} PostgreSQL calls and "
              f"{sum(r[7] for r in ingx) / len(ingx):.1f} Redis sends+reads each")
        parts = {"wall": [r[2] for r in ingx], "cpu": [r[3] for r in ingx], "postgresql": [r[4] for r in ingx],
                 "redis": [r[6] for r in ingx], "rest": [r[2] - r[4] - r[6] for r in ingx],
                 "gc cpu": [r[8] for r in ingx if len(r) > 8]}
        for name, vals in parts.items():
            if vals:
                print(f"  {name:14s} p50 {pct(vals, .5) * 1000:7.1f}  p99 {pct(vals, .99) * 1000:7.1f}  "
                      f"mean {sum(vals) / len(vals) * 1000:7.1f} ms")

    slow = sorted((r for r in rows if r.get("e2e", r["total"]) >= args.slow), key=lambda r: r["t"])
    print(f"\n{len(slow)} deliveries >= {args.slow * 1000:.0f} ms")
    windows = []
    for r in slow:
        if windows and r["t"] - windows[-1][-1]["t"] < 0.3:
            windows[-1].append(r)
        else:
            windows.append([r])
    for w in windows:
        a, b = w[0]["t"], w[-1]["t"]
        worst = max(w, key=lambda r: r.get("e2e", r["total"]))
        print(f"\n=== stall window {a - t0:+.2f} .. {b - t0:+.2f} s: {len(w)} slow deliveries, worst "
              f"{worst.get('e2e', worst['total']) * 1000:.0f} ms")
        for s in stages:
            vals = [r[s] for r in w if s in r]
            if vals:
                print(f"   {s:14s} median {statistics.median(vals) * 1000:7.1f}  max {max(vals) * 1000:7.1f} ms")
        by = defaultdict(int)
        for r in w:
            by[(r["kind"], r.get("asgi"), r["pubproc"])] += 1
        print("   by (kind, asgi, publisher):", dict(by))
        lo = a - max(r.get("e2e", r["total"]) for r in w) - 0.3
        for e in events:
            if lo <= e[0] <= b:
                if e[2] == "gc" and e[3] >= 0.005:
                    print(f"   {e[0] - t0:+.3f} {e[1]:12s} GC gen{e[4]} {e[3] * 1000:.1f} ms")
                elif e[2] in ("lag", "tlag") and e[3] >= 0.02:
                    print(f"   {e[0] - t0:+.3f} {e[1]:12s} {e[2]} {e[3] * 1000:.1f} ms")
                elif e[2] == "cpu":
                    busy, iow, psi, iopsi, steal = (e[3] + [0])[:5]
                    if psi > 0.02 or iow > 0.05 or iopsi > 0.01 or steal > 0.05:
                        print(f"   {e[0] - t0:+.3f} cpu busy {busy:.0%} iowait {iow:.0%} steal {steal:.0%} "
                              f"cpu-pressure {psi * 1000:.0f} ms io-pressure {iopsi * 1000:.0f} ms")
                elif e[2] == "pg":
                    waits = [f"{r[1]}:{r[3]}/{r[4]}:{(r[6] or '')[:30]}" for r in e[3][0]
                             if r[3] and r[3] != "Activity" and r[4] != "CheckpointWriteDelay"]
                    if waits:
                        print(f"   {e[0] - t0:+.3f} pg waits {waits}")
                elif e[2] == "procs":
                    print(f"   {e[0] - t0:+.3f} top procs (cpu-s/250ms) {[(round(c, 2), n) for c, _p, n in e[3][0]]}")

    print("\ntimeline (0.5 s bins by client receive time): max api / visitor latency ms; machine busy, steal, "
          "cpu pressure ms; max loop lag ms per process; GC ms per process")
    bins = defaultdict(lambda: {"api": 0.0, "visitor": 0.0, "cpu": [], "lag": defaultdict(float),
                                "gc": defaultdict(float)})
    for r in rows:
        b = bins[int((r["t"] - t0) * 2)]
        b[r["kind"]] = max(b[r["kind"]], r.get("e2e", r["total"]))
    for e in events:
        if not (t0 - 1 <= e[0] <= t1 + 3):
            continue
        b = bins[int((e[0] - t0) * 2)]
        if e[2] == "cpu":
            b["cpu"].append(e[3])
        elif e[2] == "lag":
            b["lag"][e[1]] = max(b["lag"][e[1]], e[3])
        elif e[2] == "gc":
            b["gc"][e[1]] += e[3]
    for k in sorted(bins):
        b = bins[k]
        cpu = b["cpu"]
        busy = statistics.mean(c[0] for c in cpu) if cpu else float("nan")
        steal = statistics.mean((c + [0])[4] for c in cpu) if cpu else float("nan")
        psi = sum(c[2] for c in cpu) * 1000
        lags = " ".join(f"{n}:{v * 1000:.0f}" for n, v in sorted(b["lag"].items()))
        gcs = " ".join(f"{n}:{v * 1000:.0f}" for n, v in sorted(b["gc"].items()) if v >= 0.002)
        print(f"  {k / 2:5.1f}s api {b['api'] * 1000:6.0f} vis {b['visitor'] * 1000:6.0f} | busy {busy:4.0%} "
              f"steal {steal:3.0%} psi {psi:4.0f} | lag {lags} | gc {gcs}")

    print("\nwhole window, per process: GC >= 5 ms, lags >= 20 ms")
    for e in events:
        if t0 - 1 <= e[0] <= t1:
            if e[2] == "gc" and e[3] >= 0.005:
                print(f"   {e[0] - t0:+.3f} {e[1]:12s} GC gen{e[4]} {e[3] * 1000:.1f} ms")
            elif e[2] in ("lag", "tlag") and e[3] >= 0.02:
                print(f"   {e[0] - t0:+.3f} {e[1]:12s} {e[2]} {e[3] * 1000:.1f} ms")
    bg = [e for e in events if e[2] == "bgw" and t0 - 2 <= e[0] <= t1 + 2]
    if len(bg) >= 2:
        a, b = bg[0][3], bg[-1][3]
        print(f"\ncheckpointer/WAL over the window: {[y - x for x, y in zip(a[0], b[0])]} "
              "(timed, req, buffers_checkpoint, buffers_backend, backend_fsync); "
              f"wal {[y - x for x, y in zip(a[1], b[1])]}"
              " (records, bytes, write, sync)")


if __name__ == "__main__":
    main()
