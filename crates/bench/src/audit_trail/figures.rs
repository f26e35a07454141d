//! The audit-trail benchmark's figures: the Markdown table it prints, each figure beside its
//! target and its same-run baseline, and the JSON that `bench/report.py` reads.

use serde_json::{Value, json};

use super::{
    Append, AuditTrailOptions, Baselines, SEARCH_LIMIT, Searches, TARGET_APPEND_PER_S,
    TARGET_BYTES, TARGET_RECORDS, TARGET_SEARCH_MS, TARGET_VERIFY_S, ms_at,
};

pub(super) struct Figures<'a> {
    pub(super) engine: &'static str,
    pub(super) records: u64,
    pub(super) options: &'a AuditTrailOptions,
    pub(super) baselines: Baselines,
    pub(super) append: Append,
    pub(super) empty_bytes: u64,
    pub(super) bytes: u64,
    pub(super) trail_bytes: u64,
    pub(super) searches: Searches,
    pub(super) verify_s: f64,
    pub(super) verified: u64,
    pub(super) head_matches: bool,
}

fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "missed" }
}

impl Figures<'_> {
    fn append_per_s(&self) -> f64 {
        self.records as f64 / self.append.inside.as_secs_f64().max(1e-9)
    }

    fn wall_per_s(&self) -> f64 {
        self.records as f64 / self.append.wall.as_secs_f64().max(1e-9)
    }

    fn bytes_per_record(&self) -> f64 {
        self.trail_bytes as f64 / self.records as f64
    }

    /// The trail's size scaled linearly to the target's number of records (it was measured
    /// before the searches added theirs).
    fn bytes_at_target(&self) -> f64 {
        self.trail_bytes as f64 * TARGET_RECORDS as f64 / self.records as f64
    }

    /// The verification time scaled linearly to the target's number of records (it walked the
    /// benchmark's records and the searches').
    fn verify_at_target(&self) -> f64 {
        self.verify_s * TARGET_RECORDS as f64 / self.verified.max(1) as f64
    }

    fn verify_per_s(&self) -> f64 {
        self.verified as f64 / self.verify_s.max(1e-9)
    }

    pub(super) fn print(&self) {
        let scaled = self.records != TARGET_RECORDS;
        let search = &self.searches;
        let commits = &self.append.commits;
        let p99 = ms_at(&search.by_patient, 0.99);
        let bytes_at_target = self.bytes_at_target();
        let verify_at_target = self.verify_at_target();
        // At 10M records the run's own figure is the one to judge; below, the scaled one.
        let at_target = |text: String| if scaled { text } else { "–".to_owned() };
        let row = |cells: [&str; 6]| println!("| {} |", cells.join(" | "));
        println!();
        println!(
            "audit trail on {}: {} records, batches of {}, {} patients",
            self.engine,
            thousands(self.records as f64),
            self.options.batch,
            thousands(self.options.patients as f64)
        );
        println!();
        row([
            "figure",
            "this run",
            "scaled to 10M",
            "target (10M records)",
            "verdict",
            "same-run baseline",
        ]);
        row(["---", "---:", "---:", "---:", "---", "---"]);
        row([
            "append, time inside `append_audit`",
            &format!("{} records/s", thousands(self.append_per_s())),
            "–",
            "≥ 50,000 records/s",
            verdict(self.append_per_s() >= TARGET_APPEND_PER_S),
            &format!(
                "`Vec` push {} records/s; `chain::extend` {} records/s",
                thousands(self.baselines.vec_push_per_s),
                thousands(self.baselines.chain_extend_per_s)
            ),
        ]);
        row([
            "append, wall clock (generator beside)",
            &format!("{} records/s", thousands(self.wall_per_s())),
            "–",
            "",
            "",
            "",
        ]);
        row([
            &format!("one commit of {} records", self.options.batch),
            &format!(
                "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                ms_at(commits, 0.5),
                ms_at(commits, 0.99),
                commits.max() as f64 / 1_000.0
            ),
            "–",
            "",
            "",
            "",
        ]);
        row([
            "trail on disk",
            &format!(
                "{:.1} MiB, {:.0} B/record",
                self.trail_bytes as f64 / f64::from(1 << 20),
                self.bytes_per_record()
            ),
            &at_target(format!("{:.2} GiB", bytes_at_target / f64::from(1 << 30))),
            "< 2 GiB",
            verdict(bytes_at_target < TARGET_BYTES as f64),
            &format!("empty database {} KiB", self.empty_bytes / 1024),
        ]);
        row([
            &format!(
                "search by patient ({}, limit {SEARCH_LIMIT})",
                search.by_patient.len()
            ),
            &format!(
                "p50 {:.2} / p90 {:.2} / p99 {:.2} / max {:.2} ms; {:.1} records each",
                ms_at(&search.by_patient, 0.5),
                ms_at(&search.by_patient, 0.9),
                p99,
                search.by_patient.max() as f64 / 1_000.0,
                search.mean_results
            ),
            "–",
            "p99 < 50 ms",
            verdict(p99 < TARGET_SEARCH_MS),
            "",
        ]);
        row([
            "search by principal (one)",
            &format!(
                "{:.2} ms; {} records",
                search.by_principal.0, search.by_principal.1
            ),
            "–",
            "",
            "",
            "",
        ]);
        row([
            "search by action and outcome (read, denied; one)",
            &format!(
                "{:.2} ms; {} records",
                search.by_action_outcome.0, search.by_action_outcome.1
            ),
            "–",
            "",
            "",
            "",
        ]);
        row([
            &format!("verify {} records", thousands(self.verified as f64)),
            &format!(
                "{:.2} s, {} records/s",
                self.verify_s,
                thousands(self.verify_per_s())
            ),
            &at_target(format!("{verify_at_target:.1} s")),
            "< 30 s",
            verdict(verify_at_target < TARGET_VERIFY_S),
            &format!(
                "`chain::extend` (hashing alone) {} records/s",
                thousands(self.baselines.chain_extend_per_s)
            ),
        ]);
        println!();
        println!(
            "database: {} bytes after appending, {} bytes before; the store's chain head {} the \
             same records chained in memory",
            self.bytes,
            self.empty_bytes,
            if self.head_matches {
                "equals"
            } else {
                "DIFFERS FROM"
            }
        );
        if scaled {
            println!(
                "size and verification time scale linearly to 10M records; the append rate and \
                 search latency are as measured at this size"
            );
        }
        println!(
            "each search is the host operator's (Administration::search_audit, as `carevault \
             audit search`): its time includes appending the search's own audit record"
        );
    }

    pub(super) fn to_json(&self) -> Value {
        let search = &self.searches;
        json!({
            "engine": self.engine,
            "records": self.records,
            "batch": self.options.batch,
            "patients": self.options.patients,
            "seed": self.options.seed,
            "baseline": {
                "vec_push_per_s": self.baselines.vec_push_per_s,
                "chain_extend_per_s": self.baselines.chain_extend_per_s,
            },
            "append": {
                "per_s": self.append_per_s(),
                "wall_per_s": self.wall_per_s(),
                "seconds_inside": self.append.inside.as_secs_f64(),
                "seconds_wall": self.append.wall.as_secs_f64(),
                "commit_p50_ms": ms_at(&self.append.commits, 0.5),
                "commit_p99_ms": ms_at(&self.append.commits, 0.99),
                "commit_max_ms": self.append.commits.max() as f64 / 1_000.0,
            },
            "size": {
                "bytes": self.bytes,
                "empty_bytes": self.empty_bytes,
                "trail_bytes": self.trail_bytes,
                "bytes_per_record": self.bytes_per_record(),
                "trail_bytes_at_target": self.bytes_at_target(),
            },
            "search": {
                "count": search.by_patient.len(),
                "limit": SEARCH_LIMIT,
                "p50_ms": ms_at(&search.by_patient, 0.5),
                "p90_ms": ms_at(&search.by_patient, 0.9),
                "p99_ms": ms_at(&search.by_patient, 0.99),
                "max_ms": search.by_patient.max() as f64 / 1_000.0,
                "mean_results": search.mean_results,
                "by_principal_ms": search.by_principal.0,
                "by_principal_results": search.by_principal.1,
                "by_action_outcome_ms": search.by_action_outcome.0,
                "by_action_outcome_results": search.by_action_outcome.1,
                "includes_own_audit_append": true,
            },
            "verify": {
                "records": self.verified,
                "seconds": self.verify_s,
                "per_s": self.verify_per_s(),
                "seconds_at_target": self.verify_at_target(),
            },
            "head_matches_memory_chain": self.head_matches,
            "targets": {
                "records": TARGET_RECORDS,
                "append_per_s": TARGET_APPEND_PER_S,
                "search_p99_ms": TARGET_SEARCH_MS,
                "verify_s": TARGET_VERIFY_S,
                "bytes": TARGET_BYTES,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(0.2), "0");
    }
}
