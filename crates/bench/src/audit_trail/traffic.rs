//! Synthetic audit traffic: the records one busy tenant's server writes, from a seed.
//!
//! About 300 staff (clinicians, carers, a few administrators and security officers) and 10
//! machine clients act in turn, each from its own address and session, each staying with one
//! patient for a few requests before moving on. Actions are about 70 % reads, 20 % searches,
//! 5 % creates and 5 % sign-ins and token issues; every field is filled as the server fills it
//! (see `carevault_domain::records::audit_record`). Time advances by a random gap so that the
//! records spread evenly over the planned span.
//!
//! The same plan always yields the same records, so a benchmark can generate them twice (once
//! for its in-memory baselines, once for the store) instead of holding millions in memory.

use carevault_bench::synth::Rng;
use carevault_domain::audit::{AUDIT_RECORD_VERSION, AuditRecord, Outcome};
use carevault_domain::ids::TenantId;

const STAFF: usize = 300;
const CLIENTS: usize = 10;
/// Distinct source addresses (office NAT, home connections, integration hosts).
const ADDRESSES: u64 = 60;

/// What a traffic stream is: the same plan gives the same records.
#[derive(Clone, Copy, Debug)]
pub struct TrafficPlan {
    pub seed: u64,
    pub tenant: TenantId,
    pub records: u64,
    pub patients: u64,
    /// Time of the first record.
    pub start_ms: i64,
    /// The records spread over about this long.
    pub span_ms: i64,
}

/// The id of patient `index` of a seed's pool: a UUID v4 string, the same every time.
pub fn patient_id(seed: u64, index: u64) -> String {
    uuid_from(&mut Rng::for_patient(seed ^ 0x6175_6469_742d_7074, index))
}

fn uuid_from(rng: &mut Rng) -> String {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
    bytes[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// A short session or token id, as the server records it (8 bytes in hex).
fn short_id(rng: &mut Rng) -> String {
    format!("{:016x}", rng.next_u64())
}

fn address(rng: &mut Rng, client: bool) -> String {
    let host = rng.below(ADDRESSES);
    if client {
        format!("172.16.4.{}", 10 + host % 20)
    } else if host < 20 {
        format!("10.20.{}.{}", host / 10, 30 + host)
    } else {
        format!("81.2.{}.{}", 60 + host % 7, 100 + host)
    }
}

/// One principal of the tenant and what it carries from request to request.
struct Caller {
    principal: String,
    roles: Vec<String>,
    auth_strength: &'static str,
    client: bool,
    session: String,
    source: String,
    /// Index of the patient this caller is working on.
    patient: u64,
}

impl Caller {
    fn staff(rng: &mut Rng, patients: u64) -> Caller {
        let roles = match rng.below(100) {
            0..70 => vec!["clinician"],
            70..95 => vec!["carer"],
            95..98 => vec!["tenant_admin"],
            _ => vec!["security_officer"],
        };
        Caller {
            principal: format!("person/{}", uuid_from(rng)),
            roles: roles.into_iter().map(str::to_owned).collect(),
            auth_strength: if rng.chance(40) {
                "passkey"
            } else {
                "password+totp"
            },
            client: false,
            session: short_id(rng),
            source: address(rng, false),
            patient: rng.below(patients),
        }
    }

    fn client(rng: &mut Rng, patients: u64) -> Caller {
        Caller {
            principal: format!("client/{}", uuid_from(rng)),
            roles: vec!["integration".to_owned()],
            auth_strength: "client-key",
            client: true,
            session: short_id(rng),
            source: address(rng, true),
            patient: rng.below(patients),
        }
    }
}

/// A resource type and the data categories reading it discloses (as `carevault_fhir` lists them).
const READ_TYPES: [(&str, u64); 9] = [
    ("Patient", 30),
    ("Observation", 25),
    ("Encounter", 10),
    ("Condition", 10),
    ("MedicationStatement", 5),
    ("AllergyIntolerance", 5),
    ("CarePlan", 5),
    ("Appointment", 5),
    ("DocumentReference", 5),
];

/// Searches: type, parameter names (the record's detail), and whether the search is about one
/// patient (otherwise it returns several).
const SEARCHES: [(&str, &str, bool, u64); 8] = [
    ("Patient", "identifier", true, 30),
    ("Patient", "birthdate,family", false, 15),
    ("Patient", "name", false, 5),
    ("Observation", "code,patient", true, 15),
    ("Observation", "date,patient", true, 5),
    ("Encounter", "patient", true, 10),
    ("Condition", "clinical-status,patient", true, 10),
    ("Appointment", "date,practitioner", false, 10),
];

const CREATE_TYPES: [(&str, u64); 5] = [
    ("Observation", 50),
    ("Encounter", 20),
    ("Condition", 10),
    ("DocumentReference", 10),
    ("Flag", 10),
];

fn weighted<T: Copy>(rng: &mut Rng, items: &[T], weight: impl Fn(&T) -> u64) -> T {
    let total: u64 = items.iter().map(&weight).sum();
    let mut ticket = rng.below(total);
    for item in items {
        let w = weight(item);
        if ticket < w {
            return *item;
        }
        ticket -= w;
    }
    // Only reached for an empty list, which the constant tables above never are.
    items[0]
}

fn categories(resource_type: &str) -> Vec<String> {
    carevault_fhir::resource_type(resource_type)
        .map(|rt| {
            rt.data_categories()
                .iter()
                .map(|category| category.as_str().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The stream of records a plan describes, in batches.
pub struct Traffic {
    plan: TrafficPlan,
    rng: Rng,
    patients: Vec<String>,
    callers: Vec<Caller>,
    emitted: u64,
    /// Microseconds since `start_ms` of the last record.
    clock_us: u64,
    mean_gap_us: u64,
}

impl Traffic {
    pub fn new(plan: TrafficPlan) -> Traffic {
        let patients = plan.patients.max(1);
        let mut rng = Rng::new(plan.seed ^ 0x6175_6469_7473_7472);
        let mut callers: Vec<Caller> = (0..STAFF)
            .map(|_| Caller::staff(&mut rng, patients))
            .collect();
        callers.extend((0..CLIENTS).map(|_| Caller::client(&mut rng, patients)));
        let span_us = u64::try_from(plan.span_ms.max(1)).unwrap_or(1) * 1_000;
        Traffic {
            patients: (0..patients)
                .map(|index| patient_id(plan.seed, index))
                .collect(),
            plan,
            rng,
            callers,
            emitted: 0,
            clock_us: 0,
            mean_gap_us: span_us / plan.records.max(1),
        }
    }

    /// The principal of one of the staff, as recorded (for a search by principal).
    pub fn staff_principal(&self) -> String {
        self.callers
            .first()
            .map(|caller| caller.principal.clone())
            .unwrap_or_default()
    }

    /// The next at most `size` records; empty once the plan's records are all out.
    pub fn next_batch(&mut self, size: usize) -> Vec<AuditRecord> {
        let left = self.plan.records - self.emitted;
        let count = left.min(size as u64);
        self.emitted += count;
        (0..count).map(|_| self.next_record()).collect()
    }

    fn next_record(&mut self) -> AuditRecord {
        self.clock_us += self.rng.below(2 * self.mean_gap_us + 1);
        let time_ms = self.plan.start_ms + (self.clock_us / 1_000) as i64;
        // Integrations are few but busy: about a third of all requests.
        let caller_index = if self.rng.chance(30) {
            STAFF + self.rng.below(CLIENTS as u64) as usize
        } else {
            self.rng.below(STAFF as u64) as usize
        };
        let rng = &mut self.rng;
        let patients = &self.patients;
        let caller = &mut self.callers[caller_index]; // below STAFF + CLIENTS = callers.len()
        if rng.chance(30) {
            caller.patient = rng.below(patients.len() as u64);
        }
        let patient = patients[caller.patient as usize].clone(); // patient < patients.len()
        let mut record = AuditRecord {
            v: AUDIT_RECORD_VERSION,
            seq: 0,
            time_ms,
            tenant: self.plan.tenant,
            principal: caller.principal.clone(),
            session: Some(caller.session.clone()),
            roles: caller.roles.clone(),
            auth_strength: caller.auth_strength.to_owned(),
            source: Some(caller.source.clone()),
            action: String::new(),
            resource_type: None,
            resource_id: None,
            subjects: Vec::new(),
            categories: Vec::new(),
            purpose: None,
            outcome: Outcome::Success,
            detail: None,
        };
        match rng.below(100) {
            0..70 => {
                let (resource_type, _) = weighted(rng, &READ_TYPES, |(_, w)| *w);
                record.action = "read".to_owned();
                record.resource_type = Some(resource_type.to_owned());
                record.resource_id = Some(if resource_type == "Patient" {
                    patient.clone()
                } else {
                    uuid_from(rng)
                });
                match rng.below(100) {
                    0..97 => {
                        record.categories = categories(resource_type);
                        if caller.roles.iter().any(|role| role == "carer") && rng.chance(1) {
                            record.purpose = Some(format!(
                                "break-glass Patient/{patient}: urgent visit, care team unreachable"
                            ));
                        }
                        record.subjects = vec![patient];
                    }
                    97..99 => record.outcome = Outcome::NotFound,
                    _ => {
                        record.outcome = Outcome::Denied;
                        record.detail = caller.client.then(|| "scope".to_owned());
                    }
                }
            }
            70..90 => {
                let (resource_type, parameters, about_one, _) =
                    weighted(rng, &SEARCHES, |(_, _, _, w)| *w);
                record.action = "search".to_owned();
                record.resource_type = Some(resource_type.to_owned());
                record.detail = Some(parameters.to_owned());
                let found = if about_one { 1 } else { rng.range(2, 20) };
                if rng.chance(8) {
                    // Nothing matched: a search that finds nothing names no one.
                } else {
                    record.categories = categories(resource_type);
                    let mut subjects = vec![patient];
                    for _ in 1..found {
                        subjects.push(rng.pick(patients).clone());
                    }
                    subjects.sort();
                    subjects.dedup();
                    record.subjects = subjects;
                }
            }
            90..95 => {
                let (resource_type, _) = weighted(rng, &CREATE_TYPES, |(_, w)| *w);
                record.action = "create".to_owned();
                record.resource_type = Some(resource_type.to_owned());
                if rng.chance(2) {
                    record.outcome = Outcome::Invalid;
                    record.detail = Some(format!("{} issue(s)", rng.range(1, 3)));
                } else {
                    record.resource_id = Some(uuid_from(rng));
                    record.categories = categories(resource_type);
                    record.subjects = vec![patient];
                }
            }
            _ => {
                // A new token or a new sign-in: the caller's session changes from here on.
                let denied = rng.chance(3);
                record.action = if caller.client {
                    "token.issue"
                } else if caller.auth_strength == "passkey" {
                    "signin.passkey"
                } else if rng.chance(50) {
                    "signin.password"
                } else {
                    "signin.second-factor"
                }
                .to_owned();
                if denied {
                    record.outcome = Outcome::Denied;
                    record.detail = Some("bad credentials".to_owned());
                } else {
                    caller.session = short_id(rng);
                    record.session = Some(caller.session.clone());
                    if !caller.client && rng.chance(20) {
                        caller.source = address(rng, false);
                        record.source = Some(caller.source.clone());
                    }
                }
            }
        }
        record
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(records: u64) -> TrafficPlan {
        TrafficPlan {
            seed: 7,
            tenant: TenantId::generate(),
            records,
            patients: 1_000,
            start_ms: 1_767_225_600_000,
            span_ms: 30 * 24 * 3_600_000,
        }
    }

    #[test]
    fn the_same_plan_gives_the_same_records() {
        let plan = plan(2_000);
        let first = Traffic::new(plan).next_batch(2_000);
        let second = Traffic::new(plan).next_batch(2_000);
        assert_eq!(first, second);
    }

    #[test]
    fn the_stream_ends_after_the_planned_records_and_time_only_moves_forward() {
        let mut traffic = Traffic::new(plan(1_000));
        let mut all = Vec::new();
        loop {
            let batch = traffic.next_batch(300);
            if batch.is_empty() {
                break;
            }
            all.extend(batch);
        }
        assert_eq!(all.len(), 1_000);
        assert!(
            all.windows(2)
                .all(|pair| pair[0].time_ms <= pair[1].time_ms)
        );
        let reads = all.iter().filter(|r| r.action == "read").count();
        assert!((600..800).contains(&reads), "{reads} reads");
        let pool: Vec<String> = (0..1_000).map(|index| patient_id(7, index)).collect();
        assert!(
            all.iter()
                .flat_map(|r| &r.subjects)
                .all(|subject| pool.contains(subject))
        );
    }
}
