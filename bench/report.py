#!/usr/bin/env python3
"""Turns one bench/run result folder into the generated part of docs/performance.md.

Every figure is printed beside a baseline measured in the same run: the same server's /healthz
rate at the same connections, the same operation in process without HTTP, and for the audit
trail an in-memory push and the hash chain alone (audit-trail-<engine>.json, written by
`carevault-bench audit-trail`).

The tables go between two marker lines of the output file (GENERATED_FROM, GENERATED_TO); the
rest of the file, kept by hand (dated runs, profiles, the targets by session), is left as it
was. A file without the markers gets them, with the tables, at its end; a missing file is
created. bench/notes.md keeps the hand-written findings; the report points to it.
"""
import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_text(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


GENERATED_FROM = "<!-- bench/run: generated from here -->"
GENERATED_TO = "<!-- bench/run: generated up to here -->"


def embed(existing, generated):
    """`existing` with its generated part replaced by `generated` (kept by hand: the rest)."""
    block = GENERATED_FROM + "\n" + generated.strip("\n") + "\n" + GENERATED_TO
    if GENERATED_FROM in existing and GENERATED_TO in existing.split(GENERATED_FROM, 1)[1]:
        head, rest = existing.split(GENERATED_FROM, 1)
        tail = rest.split(GENERATED_TO, 1)[1]
        return head + block + tail
    if existing.strip():
        return existing.rstrip("\n") + "\n\n" + block + "\n"
    return "# Performance\n\n" + block + "\n"


def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""


def fmt(n, digits=0):
    if n is None:
        return "–"
    return f"{n:,.{digits}f}"


def phase_op(load_json, phase_name, op):
    if not load_json:
        return None
    for phase in load_json["phases"]:
        if phase["phase"] == phase_name:
            for entry in phase["ops"]:
                if entry["op"] == op:
                    return entry
    return None


def audit_trail_section(w, run, load_engines):
    """Issue #4 points 2 and 9: the trail at scale, and a read's cost with the durable trail."""
    trails = {e: load(os.path.join(run, f"audit-trail-{e}.json")) for e in ("sqlite", "postgres")}
    trails = {e: t for e, t in trails.items() if t}
    costs = {}
    http_costs = {}
    for engine in load_engines:
        inproc = load(os.path.join(run, engine, "inproc.json"))
        if inproc and inproc.get("audit_cost"):
            costs[engine] = inproc["audit_cost"]
        http = load(os.path.join(run, engine, "http-audit.json"))
        if http:
            http_costs[engine] = http
    if not trails and not costs and not http_costs:
        return
    w("### Audit trail")
    w("")
    if trails:
        first = next(iter(trails.values()))
        target = first["targets"]
        scaled = any(t["records"] != target["records"] for t in trails.values())
        w(f"`carevault-bench audit-trail`: {first['records']:,} synthetic audit records (about 300 "
          f"staff and 10 clients, {first['patients']:,} patients, 70 % reads, 20 % searches, "
          f"5 % creates, 5 % sign-ins and token issues, over 30 days) appended through "
          f"`Store::append_audit` in batches of {first['batch']} (one shared commit each) into a "
          "fresh database, then measured for size, search and verification. The baselines are "
          "the same records pushed into a `Vec` (a bare in-memory append) and chained in memory "
          "with `chain::extend` (the hash cost alone), in the same run. The append rate counts "
          "only the time inside `append_audit` (a thread generates the next batch meanwhile). "
          "Each search is the host operator's (`carevault audit search --patient`), so its time "
          "includes appending the search's own audit record.")
        w("")
        if scaled:
            w(f"The targets are for {target['records']:,} records; this run appended fewer, so "
              "size and verification time are also shown scaled linearly to that many (the "
              "verdict uses the scaled figure); append rate and search latency are as measured.")
            w("")
        names = list(trails)
        w("| figure | target | " + " | ".join(names) + " |")
        w("| --- | --- | " + " | ".join("---:" for _ in names) + " |")

        def verdict(ok):
            return "met" if ok else "**missed**"

        def row(label, goal, cell):
            w(f"| {label} | {goal} | " + " | ".join(cell(trails[n]) for n in names) + " |")

        def scale(t, value):
            return value * t["targets"]["records"] / t["records"]

        row("append (inside `append_audit`), records/s", f"≥ {fmt(target['append_per_s'])}",
            lambda t: f"{fmt(t['append']['per_s'])} ({verdict(t['append']['per_s'] >= t['targets']['append_per_s'])})")
        row("append, wall clock, records/s", "", lambda t: fmt(t["append"]["wall_per_s"]))
        row("baseline: `Vec` push, records/s", "", lambda t: fmt(t["baseline"]["vec_push_per_s"]))
        row("baseline: `chain::extend` (hash only), records/s", "",
            lambda t: fmt(t["baseline"]["chain_extend_per_s"]))
        row(f"one commit of {first['batch']} records, p50 / p99 ms", "",
            lambda t: f"{t['append']['commit_p50_ms']:.2f} / {t['append']['commit_p99_ms']:.2f}")

        def size(t):
            s = t["size"]
            at = s["trail_bytes_at_target"]
            text = f"{s['trail_bytes'] / 2**20:,.1f} MiB, {s['bytes_per_record']:.0f} B/record"
            if t["records"] != t["targets"]["records"]:
                text += f"; {at / 2**30:.2f} GiB scaled"
            return f"{text} ({verdict(at < t['targets']['bytes'])})"
        row("trail on disk", f"< {target['bytes'] / 2**30:.0f} GiB", size)
        row("search by patient, p50 / p90 / p99 / max ms", f"p99 < {target['search_p99_ms']:.0f} ms",
            lambda t: f"{t['search']['p50_ms']:.2f} / {t['search']['p90_ms']:.2f} / "
                      f"{t['search']['p99_ms']:.2f} / {t['search']['max_ms']:.2f} "
                      f"({verdict(t['search']['p99_ms'] < t['targets']['search_p99_ms'])})")
        row("records per search by patient (limit 50), mean", "",
            lambda t: f"{t['search']['mean_results']:.1f} of {t['search']['count']:,} searches")
        row("one search by principal / by action and outcome, ms", "",
            lambda t: f"{t['search']['by_principal_ms']:.2f} / {t['search']['by_action_outcome_ms']:.2f}")

        def verify(t):
            v = t["verify"]
            text = f"{v['seconds']:.1f} s ({fmt(v['per_s'])} records/s)"
            if t["records"] != t["targets"]["records"]:
                text += f"; {v['seconds_at_target']:.1f} s scaled"
            return f"{text} ({verdict(v['seconds_at_target'] < t['targets']['verify_s'])})"
        row("verify the whole chain", f"< {target['verify_s']:.0f} s", verify)
        row("store's chain head equals the in-memory chain", "",
            lambda t: "yes" if t["head_matches_memory_chain"] else "**no**")
        w("")
    if http_costs:
        w("Issue #4 point 9: the server's read by id over HTTP with the durable trail against "
          "the same server with a bare in-memory append behind reads (`carevault-bench http-audit`: the server as "
          "`carevault serve` composes it, started on the same data directory with each trail in "
          "turn, the order swapped every round; a benchmark switch, not a server setting):")
        w("")
        w("| engine | durable trail reads/s | p99 ms | server CPU µs/read | in-memory append reads/s | p99 ms | server CPU µs/read | durable ÷ memory (by round) | target |")
        w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        for engine, h in http_costs.items():
            d, m = h["durable"], h["memory"]
            ok = h["durable_share"] >= h["target_share"]
            rounds = ", ".join(f"{r * 100:.0f}" for r in h.get("round_shares", []))
            w(f"| {engine} | {fmt(d['rps'])} | {d['p99_ms']:.2f} | {d['server_cpu_us_per_read']:.1f} | "
              f"{fmt(m['rps'])} | {m['p99_ms']:.2f} | {m['server_cpu_us_per_read']:.1f} | "
              f"{h['durable_share'] * 100:.1f} % ({rounds}) | "
              f"≥ {h['target_share'] * 100:.0f} % ({'met' if ok else '**missed**'}) |")
        w("")
    if costs:
        w("The same comparison in process, a diagnostic without a target (`carevault-bench "
          "inproc --audit both`: the domain read use case without HTTP, its audit records sent "
          "to the group committer and then to the database, or to a `Vec`), same run and "
          "connections. Without HTTP the read is so cheap that the wait for a shared commit "
          "bounds the durable read, so its share is lower than the server's:")
        w("")
        w("| engine | durable trail req/s | p99 ms | CPU µs/read | in-memory append req/s | p99 ms | CPU µs/read | durable ÷ memory (by round) |")
        w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")

        def cpu(value):
            return "–" if value is None else f"{value:.1f}"
        for engine, c in costs.items():
            rounds = ", ".join(f"{r * 100:.0f}" for r in c.get("round_shares", []))
            w(f"| {engine} | {fmt(c['durable_rps'])} | {c['durable_p99_ms']:.2f} | "
              f"{cpu(c.get('durable_cpu_us'))} | {fmt(c['memory_rps'])} | "
              f"{c['memory_p99_ms']:.2f} | {cpu(c.get('memory_cpu_us'))} | "
              f"{c['share'] * 100:.1f} % ({rounds}) |")
        w("")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("out")
    parser.add_argument("--patients", type=int, required=True)
    parser.add_argument("--seed", default="1")
    parser.add_argument("--connections", default="64")
    parser.add_argument("--duration", default="20s")
    parser.add_argument("--steps", default="")
    args = parser.parse_args()
    run = args.run_dir
    steps = [int(s) for s in args.steps.split()] or [args.patients]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    lines = []
    w = lines.append
    w("## The last full `bench/run`")
    w("")
    w("Generated by `bench/run` from the run in `" + os.path.relpath(run, root) + "`; the "
      "findings are kept by hand in `bench/notes.md`. Every figure stands beside a "
      "baseline measured **in the same run**: the loopback HTTP ceiling (the same server "
      "answering `/healthz` with the same connections and the same client), and where it can "
      "be measured the same operation in process without HTTP (the domain use case, and the raw "
      "store fetch).")
    w("")
    w("### Machine")
    w("")
    model = ""
    for line in read_text("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = ""
    for line in read_text("/proc/meminfo").splitlines():
        if line.startswith("MemTotal"):
            mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    w("| fact | value |")
    w("| --- | --- |")
    w(f"| cores (nproc) | {sh('nproc')} |")
    w(f"| CPU model | {model} |")
    w(f"| memory | {mem} |")
    w(f"| kernel | {platform.release()} |")
    w(f"| rustc | {sh('rustc', '--version')} |")
    w(f"| PostgreSQL | {sh('psql', '--version')} |")
    w(f"| commit | {sh('git', '-C', root, 'rev-parse', '--short', 'HEAD')} (plus uncommitted work) |")
    w(f"| date | {datetime.date.today().isoformat()} |")
    w(f"| population | {args.patients:,} patients, seed {args.seed} |")
    w(f"| load | {args.connections} connections, {args.duration} per phase, closed loop, "
      "client on the same 2 cores |")
    w("")
    w("The load generator shares the two cores with the server, so every absolute rate here "
      "is lower than a separate client machine would see; the ratios to `/healthz` carry the "
      "same handicap on both sides and are the figures to compare.")
    w("")

    engines = [e for e in ("sqlite", "postgres") if os.path.isdir(os.path.join(run, e))]
    for engine in engines:
        edir = os.path.join(run, engine)
        final = load(os.path.join(edir, f"load-{args.patients}.json"))
        inproc = load(os.path.join(edir, "inproc.json"))
        inproc_by = {r["op"]: r for r in (inproc or {}).get("inproc", [])}
        w(f"### {engine}: {args.patients:,} patients")
        w("")
        if not final:
            w("No load figures (the run did not finish).")
            w("")
            continue
        ceiling = final["healthz_rps"]
        w(f"Ceiling: `/healthz` served **{fmt(ceiling)} requests/s** at {final['connections']} "
          "connections.")
        w("")
        w("| operation (alone) | req/s | × healthz | resources/s | p50 ms | p90 ms | p99 ms | p99.9 ms | errors | in process, no HTTP (req/s, p99 ms) | raw store (req/s) |")
        w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
        base_op = phase_op(final, "healthz ceiling", "healthz")
        if base_op:
            w(f"| healthz (baseline) | {fmt(base_op['rps'])} | 1.000 | – | {base_op['p50_ms']:.2f} | "
              f"{base_op['p90_ms']:.2f} | {base_op['p99_ms']:.2f} | {base_op['p999_ms']:.2f} | {base_op['errors']} | – | – |")
        inproc_map = {"read": "domain read", "nhs": "domain nhs", "family": "domain family"}
        for op in ("read", "nhs", "family", "create", "transaction", "history"):
            entry = phase_op(final, f"{op} alone", op)
            if not entry:
                continue
            ip = inproc_by.get(inproc_map.get(op, ""))
            ip_text = f"{fmt(ip['rps'])} ({ip['p99_ms']:.2f})" if ip else "–"
            raw = inproc_by.get("store read") if op == "read" else None
            raw_text = fmt(raw["rps"]) if raw else "–"
            w(f"| {op} | {fmt(entry['rps'])} | {entry['ratio_to_healthz']:.3f} | "
              f"{fmt(entry['resources_per_second'])} | {entry['p50_ms']:.2f} | {entry['p90_ms']:.2f} | "
              f"{entry['p99_ms']:.2f} | {entry['p999_ms']:.2f} | {entry['errors']} | {ip_text} | {raw_text} |")
        w("")
        mix = [p for p in final["phases"] if p["phase"] == "mix"]
        if mix:
            w("Mixed load (`read=60,nhs=15,family=10,create=10,transaction=3,history=2`):")
            w("")
            w("| operation (in the mix) | req/s | × healthz | p50 ms | p90 ms | p99 ms | p99.9 ms | errors |")
            w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
            total = 0.0
            for entry in mix[0]["ops"]:
                total += entry["rps"]
                w(f"| {entry['op']} | {fmt(entry['rps'])} | {entry['ratio_to_healthz']:.3f} | "
                  f"{entry['p50_ms']:.2f} | {entry['p90_ms']:.2f} | {entry['p99_ms']:.2f} | "
                  f"{entry['p999_ms']:.2f} | {entry['errors']} |")
            w(f"| **all** | {fmt(total)} | {total / ceiling:.3f} | | | | | |")
            w("")
        # Import.
        w("Import through transaction Bundles (`populate`, 32 bundles in flight (its default), up to 100 "
          "entries each, whole patients per bundle):")
        w("")
        w("| patients | resources | seconds | patients/s | resources/s | target |")
        w("| --- | ---: | ---: | ---: | ---: | ---: |")
        first = 0
        for step in steps:
            pop = load(os.path.join(edir, f"populate-{step}.json"))
            if pop:
                w(f"| {first:,}–{step:,} | {pop['resources']:,} | {pop['seconds']:.1f} | "
                  f"{fmt(pop['patients_per_second'])} | {fmt(pop['resources_per_second'])} | 10,000 |")
            first = step
        w("")
        # Growth.
        w("Growth (read by id and NHS-number search alone, same connections; the last row is "
          "the full run above):")
        w("")
        w("| patients | healthz req/s | read req/s | read × healthz | read p99 ms | nhs req/s | nhs × healthz | nhs p99 ms | server peak RSS |")
        w("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for step in steps:
            lj = load(os.path.join(edir, f"load-{step}.json"))
            if not lj:
                continue
            read = phase_op(lj, "read alone", "read")
            nhs = phase_op(lj, "nhs alone", "nhs")
            hwm = read_text(os.path.join(edir, f"hwm-{step}.txt"))
            hwm_text = f"{int(hwm) / 1024:.0f} MiB" if hwm.isdigit() else "–"
            w(f"| {step:,} | {fmt(lj['healthz_rps'])} | {fmt(read and read['rps'])} | "
              f"{read['ratio_to_healthz'] if read else 0:.3f} | {read['p99_ms'] if read else 0:.2f} | "
              f"{fmt(nhs and nhs['rps'])} | {nhs['ratio_to_healthz'] if nhs else 0:.3f} | "
              f"{nhs['p99_ms'] if nhs else 0:.2f} | {hwm_text} |")
        w("")
        size = read_text(os.path.join(edir, "db-bytes.txt"))
        if size.isdigit():
            w(f"Database size at {args.patients:,} patients: {int(size) / 1024 / 1024:,.0f} MiB.")
            w("")

    audit_trail_section(w, run, engines)

    # Criterion.
    crit = read_text(os.path.join(run, "criterion.txt"))
    results = []
    for line in crit.splitlines():
        m = re.match(r"test (.+?)\s+\.\.\. bench:\s+([\d,]+) ns/iter \(\+/- ([\d,]+)\)", line)
        if m:
            results.append((m.group(1), int(m.group(2).replace(",", "")), int(m.group(3).replace(",", ""))))
    if results:
        w("### Micro-benchmarks (criterion)")
        w("")
        w("`cargo bench -p carevault-bench --bench hot_paths`, same run. The audit append is set "
          "beside an in-memory `Vec` push of the same 100 records (the floor).")
        w("")
        w("| function | time | ± | per item |")
        w("| --- | ---: | ---: | ---: |")

        def human(ns):
            if ns >= 1_000_000:
                return f"{ns / 1e6:.2f} ms"
            if ns >= 1_000:
                return f"{ns / 1e3:.2f} µs"
            return f"{ns} ns"
        for name, ns, dev in results:
            per = human(ns // 100) if "batch of 100" in name else ""
            w(f"| {name} | {human(ns)} | {human(dev)} | {per} |")
        w("")

    w("### Reproduce")
    w("")
    w("```sh")
    w(f"bench/run --patients {args.patients}" + (f" --steps \"{' '.join(str(s) for s in steps[:-1])}\"" if len(steps) > 1 else ""))
    w("# or piece by piece, against a server you started:")
    w("cargo build --release -p carevault-cli -p carevault-bench")
    w("target/release/carevault --data-dir D serve --listen 127.0.0.1:8080 &")
    w(f"target/release/carevault-bench populate --data-dir D --base http://127.0.0.1:8080 --patients {args.patients} --seed {args.seed}")
    w(f"target/release/carevault-bench load --credentials D/bench-client.json --base http://127.0.0.1:8080 --patients {args.patients} --seed {args.seed} \\")
    w("    --connections 64 --duration 20s --solo read,nhs,family --mix read=60,nhs=15,family=10,create=10,transaction=3,history=2")
    w(f"target/release/carevault-bench inproc --data-dir D --credentials D/bench-client.json --base http://127.0.0.1:8080 --patients {args.patients}")
    w("kill %1  # http-audit serves D itself, with each trail in turn")
    w(f"target/release/carevault-bench http-audit --data-dir D --credentials D/bench-client.json --patients {args.patients} --seed {args.seed}")
    w("target/release/carevault-bench audit-trail --records 10000000 --json audit-trail-sqlite.json")
    w("target/release/carevault-bench audit-trail --records 10000000 --database postgres://postgres@127.0.0.1:5432/postgres")
    w("cargo bench -p carevault-bench --bench hot_paths")
    w("```")
    w("")
    w("Findings and profiles, kept by hand: `bench/notes.md`.")
    try:
        with open(args.out) as f:
            existing = f.read()
    except OSError:
        existing = ""
    with open(args.out, "w") as f:
        f.write(embed(existing, "\n".join(lines)))


if __name__ == "__main__":
    sys.exit(main())
