//! A deterministic synthetic population: patient `i` of seed `s` is always the same person with
//! the same urgent-care and home-care history, whoever generates it and in whatever order.
//!
//! The load generator relies on this: it derives NHS numbers, family names and birth dates of
//! existing patients from the seed instead of asking the server for them.
//!
//! Each patient is an urgent-care patient (NHS 111, out-of-hours, urgent treatment centre:
//! 1–3 encounters with a set of vital signs each, a few conditions, perhaps an allergy and
//! medications) or, about a third of them and more often the old, also a home-care client
//! (home visits with vital signs, a care plan, a care team and booked visit appointments).
//! Home-entry details (key safe codes, access notes) are not generated yet: carevault has no
//! resource type for them so far.

use std::str::FromStr;

use serde_json::{Number, Value, json};

const NHS_NUMBER_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";
const LOINC: &str = "http://loinc.org";
const SNOMED: &str = "http://snomed.info/sct";
const UCUM: &str = "http://unitsofmeasure.org";
const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";

/// Days from 1970-01-01 to 2026-01-01: the population's "today", fixed so output never depends
/// on the clock.
const TODAY_DAYS: i64 = 20_454;

/// SplitMix64: small, fast, and stable across versions of any crate.
#[derive(Clone)]
pub struct Rng(u64);

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(mix(seed ^ 0x6361_7265_7661_756c))
    }

    /// The generator of one patient: independent of every other patient's.
    pub fn for_patient(seed: u64, index: u64) -> Rng {
        Rng(mix(
            mix(seed).wrapping_add(mix(index ^ 0x9e37_79b9_7f4a_7c15))
        ))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n.max(1))) >> 64) as u64
    }

    /// Uniform in `low..=high`.
    pub fn range(&mut self, low: i64, high: i64) -> i64 {
        let span = (high - low).max(0) as u64 + 1;
        low + self.below(span) as i64
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        // Every list below is a non-empty constant.
        &items[self.below(items.len() as u64) as usize]
    }

    fn uuid(&mut self) -> String {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    }
}

/// The NHS number of patient `index`: unique per index (for up to 20 million patients) and valid
/// under Modulus 11. Eight digits are a bijection of the index; the ninth is chosen so that the
/// check digit is never the forbidden 10.
pub fn nhs_number(seed: u64, index: u64) -> String {
    const SPAN: u64 = 20_000_000; // 2^8 · 5^7: coprime with the multiplier below.
    let offset = mix(seed) % SPAN;
    let prefix = 60_000_000 + (index.wrapping_mul(7_919).wrapping_add(offset)) % SPAN;
    let mut digits: Vec<u32> = prefix
        .to_string()
        .chars()
        .filter_map(|c| c.to_digit(10))
        .collect();
    let partial: u32 = digits
        .iter()
        .zip((3..=10).rev())
        .map(|(digit, weight)| digit * weight)
        .sum();
    let mut ninth = (mix(seed ^ index) % 10) as u32;
    let check = loop {
        let sum = partial + ninth * 2;
        match 11 - sum % 11 {
            11 => break 0,
            10 => ninth = (ninth + 1) % 10,
            check => break check,
        }
    };
    digits.push(ninth);
    digits.push(check);
    digits.iter().map(u32::to_string).collect()
}

/// What a load run needs to know of an existing patient without asking the server.
pub struct Identity {
    pub nhs_number: String,
    pub family: String,
    pub birth_date: String,
}

/// One generated patient: its bundle entries, Patient first.
pub struct PatientRecord {
    pub identity: Identity,
    pub entries: Vec<Value>,
}

const COMMON_FAMILIES: &[&str] = &[
    "Smith",
    "Jones",
    "Taylor",
    "Brown",
    "Williams",
    "Wilson",
    "Johnson",
    "Davies",
    "Patel",
    "Robinson",
    "Wright",
    "Thompson",
    "Evans",
    "Walker",
    "White",
    "Roberts",
    "Green",
    "Hall",
    "Wood",
    "Jackson",
    "Clarke",
    "Khan",
    "Lewis",
    "Harris",
    "Martin",
    "Cooper",
    "King",
    "Lee",
    "Baker",
    "Harrison",
    "Morgan",
    "Allen",
    "James",
    "Scott",
    "Phillips",
    "Watson",
    "Davis",
    "Parker",
    "Price",
    "Bennett",
    "Young",
    "Griffiths",
    "Mitchell",
    "Kelly",
    "Cook",
    "Carter",
    "Richardson",
    "Bailey",
    "Collins",
    "Bell",
    "Shaw",
    "Murphy",
    "Miller",
    "Cox",
    "Richards",
    "Ali",
    "Hussain",
    "Ahmed",
    "Singh",
    "Kaur",
    "Begum",
    "Nowak",
    "Kowalski",
    "O'Brien",
    "Murray",
    "Hughes",
    "Edwards",
    "Turner",
    "Hill",
    "Moore",
    "Ward",
    "Morris",
    "Campbell",
];
const SYLLABLES: &[&str] = &[
    "ash", "bar", "bel", "brook", "cal", "dun", "el", "far", "gar", "hal", "hard", "kin", "lan",
    "ley", "mar", "mer", "mor", "ney", "ock", "pen", "ridge", "ros", "sel", "stan", "ter", "thorn",
    "ton", "well", "wick", "win", "worth", "by", "croft", "den", "field", "ham",
];
const FEMALE_GIVEN: &[&str] = &[
    "Olivia", "Amelia", "Isla", "Ava", "Mia", "Grace", "Sophia", "Lily", "Freya", "Emily",
    "Margaret", "Jean", "Patricia", "Susan", "Sarah", "Aisha", "Fatima", "Zara", "Ewa", "Niamh",
    "Joan", "Dorothy", "Elsie", "Hannah", "Chloe",
];
const MALE_GIVEN: &[&str] = &[
    "Oliver", "George", "Noah", "Arthur", "Muhammad", "Leo", "Harry", "Jack", "Oscar", "Charlie",
    "John", "David", "Michael", "Peter", "Robert", "James", "William", "Mohammed", "Piotr", "Sean",
    "Kenneth", "Stanley", "Ravi", "Tomasz", "Callum",
];
const STREETS: &[&str] = &[
    "High", "Station", "Church", "Victoria", "Park", "Mill", "Manor", "Queens", "Kings", "Albert",
    "Chapel", "Green", "School", "North", "Bridge", "Oak", "Elm", "Willow",
];
const STREET_KINDS: &[&str] = &[
    "Street", "Road", "Lane", "Avenue", "Close", "Way", "Crescent",
];
const TOWNS: &[(&str, &str)] = &[
    ("Leeds", "LS"),
    ("Bradford", "BD"),
    ("Wakefield", "WF"),
    ("Sheffield", "S"),
    ("York", "YO"),
    ("Harrogate", "HG"),
    ("Huddersfield", "HD"),
    ("Doncaster", "DN"),
    ("Halifax", "HX"),
];
const SURGERIES: &[&str] = &[
    "Riverside Surgery",
    "Park View Medical Centre",
    "The Health Centre",
    "Chapel Allerton Practice",
    "Moor Lane Surgery",
];

/// (SNOMED code, display, long-term?)
const CONDITIONS: &[(&str, &str, bool)] = &[
    ("38341003", "Hypertensive disorder", true),
    ("44054006", "Type 2 diabetes mellitus", true),
    ("13645005", "Chronic obstructive lung disease", true),
    ("195967001", "Asthma", true),
    ("84114007", "Heart failure", true),
    ("49436004", "Atrial fibrillation", true),
    ("52448006", "Dementia", true),
    ("68566005", "Urinary tract infectious disease", false),
    ("128045006", "Cellulitis", false),
    ("233604007", "Pneumonia", false),
    ("195662009", "Acute viral pharyngitis", false),
    ("217082002", "Accidental fall", false),
    ("25064002", "Headache", false),
    ("21522001", "Abdominal pain", false),
    ("29857009", "Chest pain", false),
];
const ALLERGIES: &[(&str, &str, &str)] = &[
    ("91936005", "Allergy to penicillin", "medication"),
    ("294505008", "Allergy to amoxicillin", "medication"),
    ("91935009", "Allergy to peanut", "food"),
    ("300916003", "Latex allergy", "environment"),
    ("293586001", "Allergy to aspirin", "medication"),
];
const REACTIONS: &[(&str, &str)] = &[
    ("126485001", "Urticaria"),
    ("271807003", "Eruption of skin"),
    ("39579001", "Anaphylaxis"),
    ("418290006", "Itching"),
];
const MEDICINES: &[(&str, &str, &str)] = &[
    (
        "319283006",
        "Amlodipine 5mg tablets",
        "One tablet once a day",
    ),
    (
        "325278007",
        "Metformin 500mg tablets",
        "One tablet twice a day with food",
    ),
    (
        "320000009",
        "Ramipril 5mg capsules",
        "One capsule once a day",
    ),
    (
        "320029008",
        "Atorvastatin 20mg tablets",
        "One tablet at night",
    ),
    (
        "317972000",
        "Omeprazole 20mg capsules",
        "One capsule once a day",
    ),
    (
        "322236009",
        "Paracetamol 500mg tablets",
        "Two tablets up to four times a day",
    ),
    (
        "319740004",
        "Bisoprolol 2.5mg tablets",
        "One tablet once a day",
    ),
    (
        "330149004",
        "Salbutamol 100micrograms inhaler",
        "Two puffs when required",
    ),
    (
        "376657009",
        "Apixaban 5mg tablets",
        "One tablet twice a day",
    ),
    (
        "374646004",
        "Amoxicillin 500mg capsules",
        "One capsule three times a day for 5 days",
    ),
];
/// (class code, class display, type code, type display)
const URGENT_ENCOUNTERS: &[(&str, &str, &str, &str)] = &[
    ("EMER", "emergency", "50849002", "Emergency room admission"),
    ("AMB", "ambulatory", "185347001", "Encounter for problem"),
    ("VR", "virtual", "185317003", "Telephone encounter"),
];
const HOME_VISIT: (&str, &str, &str, &str) = ("HH", "home health", "439708006", "Home visit");
const VISIT_SERVICES: &[(&str, &str)] = &[
    ("Personal care visit", "Morning personal care"),
    ("Medication visit", "Medication prompt and administration"),
    ("Meal visit", "Meal preparation"),
    ("Night check", "Evening settling and safety check"),
];
const CARERS: &[&str] = &[
    "Jane Holt",
    "Priya Shah",
    "Marek Zielinski",
    "Tom Fenwick",
    "Grace Adeyemi",
    "Lucy Barnes",
];

/// A FHIR decimal with one decimal place, kept exactly as written (`72.0`, not `72`).
fn tenths(value: i64) -> Value {
    let text = format!("{}.{}", value / 10, (value % 10).abs());
    Number::from_str(&text).map_or(Value::Null, Value::Number)
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn date(days: i64) -> String {
    let (y, m, d) = civil(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// A dateTime at `minute` minutes past midnight (UTC) of day `days`.
fn date_time(days: i64, minute: i64) -> String {
    let minute = minute.clamp(0, 24 * 60 - 1);
    format!("{}T{:02}:{:02}:00Z", date(days), minute / 60, minute % 60)
}

fn family_name(rng: &mut Rng) -> String {
    if rng.chance(60) {
        // Skewed towards the head of the list, as surnames are.
        let len = COMMON_FAMILIES.len() as u64;
        let index = rng.below(len).min(rng.below(len)) as usize;
        COMMON_FAMILIES[index].to_owned()
    } else {
        let mut name = String::new();
        for _ in 0..rng.range(2, 3) {
            let syllable: &&str = rng.pick(SYLLABLES);
            name.push_str(syllable);
        }
        let mut chars = name.chars();
        match chars.next() {
            Some(first) => first.to_uppercase().chain(chars).collect(),
            None => name,
        }
    }
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({"coding": [{"system": system, "code": code, "display": display}]})
}

fn reference(full_url: &str) -> Value {
    json!({"reference": full_url})
}

struct Builder {
    entries: Vec<Value>,
}

impl Builder {
    fn add(&mut self, rng: &mut Rng, resource: Value) -> String {
        let full_url = format!("urn:uuid:{}", rng.uuid());
        let resource_type = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or("Basic")
            .to_owned();
        self.entries.push(json!({
            "fullUrl": full_url,
            "resource": resource,
            "request": {"method": "POST", "url": resource_type},
        }));
        full_url
    }
}

/// Patient `index` of population `seed`, with its whole history.
pub fn patient(seed: u64, index: u64) -> PatientRecord {
    let mut rng = Rng::for_patient(seed, index);
    let nhs = nhs_number(seed, index);
    let female = rng.chance(52);
    let home_care_age = rng.chance(25);
    let age_years = if home_care_age {
        rng.range(65, 99)
    } else {
        rng.range(0, 90)
    };
    let birth_days = TODAY_DAYS - age_years * 365 - rng.range(0, 364);
    let birth_date = date(birth_days);
    let family = family_name(&mut rng);
    let given_list = if female { FEMALE_GIVEN } else { MALE_GIVEN };
    let mut given = vec![rng.pick(given_list).to_string()];
    if rng.chance(40) {
        given.push(rng.pick(given_list).to_string());
    }
    let prefix = match (age_years >= 18, female, rng.below(3)) {
        (false, _, _) => None,
        (true, true, 0) => Some("Ms"),
        (true, true, 1) => Some("Mrs"),
        (true, true, _) => Some("Miss"),
        (true, false, 0) => Some("Dr"),
        (true, false, _) => Some("Mr"),
    };
    let (town, area) = *rng.pick(TOWNS);
    let postcode = format!(
        "{area}{} {}{}{}",
        rng.range(1, 28),
        rng.range(1, 9),
        char::from(b'A' + rng.below(26) as u8),
        char::from(b'A' + rng.below(26) as u8)
    );
    let mut name = json!({"use": "official", "family": family, "given": given});
    if let Some(prefix) = prefix {
        name["prefix"] = json!([prefix]);
    }
    let mut telecom = vec![json!({
        "system": "phone",
        "value": format!("07700 9{:05}", rng.below(100_000)),
        "use": "mobile",
    })];
    if age_years >= 16 && rng.chance(50) {
        telecom.push(json!({
            "system": "email",
            "value": format!("{}.{}{}@example.org", given[0].to_lowercase(), family.to_lowercase().replace('\'', ""), rng.below(100)),
        }));
    }
    let patient = json!({
        "resourceType": "Patient",
        "identifier": [{"system": NHS_NUMBER_SYSTEM, "value": nhs}],
        "active": true,
        "name": [name],
        "telecom": telecom,
        "gender": if female { "female" } else { "male" },
        "birthDate": birth_date,
        "address": [{
            "use": "home",
            "line": [format!("{} {} {}", rng.range(1, 240), rng.pick(STREETS), rng.pick(STREET_KINDS))],
            "city": town,
            "postalCode": postcode,
            "country": "GB",
        }],
        "generalPractitioner": [{"display": *rng.pick(SURGERIES)}],
    });
    let mut builder = Builder {
        entries: Vec::new(),
    };
    let patient_url = builder.add(&mut rng, patient);
    let home_care = age_years >= 65 && (home_care_age || rng.chance(30));

    // Long-term conditions first (some patients have none), then acute ones per encounter.
    let long_term: Vec<&(&str, &str, bool)> = CONDITIONS.iter().filter(|c| c.2).collect();
    let chronic_count = if age_years >= 50 {
        rng.range(0, 3)
    } else {
        rng.range(0, 1)
    };
    let mut chronic = Vec::new();
    for _ in 0..chronic_count {
        let condition = **rng.pick(&long_term);
        if !chronic.contains(&condition) {
            chronic.push(condition);
        }
    }

    let urgent_count = rng.range(1, 3);
    let visit_count = if home_care { rng.range(2, 4) } else { 0 };
    let first_day = TODAY_DAYS - 730;
    for number in 0..(urgent_count + visit_count) {
        let urgent = number < urgent_count;
        let (class, class_display, kind, kind_display) = if urgent {
            *rng.pick(URGENT_ENCOUNTERS)
        } else {
            HOME_VISIT
        };
        let day = rng.range(first_day.max(birth_days), TODAY_DAYS - 1);
        let start = rng.range(6 * 60, 22 * 60);
        let end = start + rng.range(10, 90);
        let encounter = json!({
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": ACT_CODE, "code": class, "display": class_display},
            "type": [coding(SNOMED, kind, kind_display)],
            "subject": reference(&patient_url),
            "period": {"start": date_time(day, start), "end": date_time(day, end)},
        });
        let encounter_url = builder.add(&mut rng, encounter);
        let at = date_time(day, start + 5);
        vital_signs(
            &mut builder,
            &mut rng,
            &patient_url,
            &encounter_url,
            &at,
            age_years,
        );
        if urgent {
            let acute: Vec<&(&str, &str, bool)> = CONDITIONS.iter().filter(|c| !c.2).collect();
            let (code, display, _) = **rng.pick(&acute);
            let condition = json!({
                "resourceType": "Condition",
                "clinicalStatus": coding("http://terminology.hl7.org/CodeSystem/condition-clinical", "resolved", "Resolved"),
                "verificationStatus": coding("http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed", "Confirmed"),
                "category": [coding("http://terminology.hl7.org/CodeSystem/condition-category", "encounter-diagnosis", "Encounter Diagnosis")],
                "code": coding(SNOMED, code, display),
                "subject": reference(&patient_url),
                "encounter": reference(&encounter_url),
                "onsetDateTime": date_time(day, start),
                "recordedDate": date_time(day, end),
            });
            builder.add(&mut rng, condition);
        }
    }
    for (code, display, _) in &chronic {
        let onset = rng.range(birth_days, TODAY_DAYS - 30);
        let condition = json!({
            "resourceType": "Condition",
            "clinicalStatus": coding("http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active"),
            "verificationStatus": coding("http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed", "Confirmed"),
            "category": [coding("http://terminology.hl7.org/CodeSystem/condition-category", "problem-list-item", "Problem List Item")],
            "code": coding(SNOMED, code, display),
            "subject": reference(&patient_url),
            "onsetDateTime": date_time(onset, 9 * 60),
            "recordedDate": date(onset),
        });
        builder.add(&mut rng, condition);
    }
    let allergy_count = if rng.chance(25) { rng.range(1, 2) } else { 0 };
    for _ in 0..allergy_count {
        let (code, display, category) = *rng.pick(ALLERGIES);
        let (reaction_code, reaction_display) = *rng.pick(REACTIONS);
        let allergy = json!({
            "resourceType": "AllergyIntolerance",
            "clinicalStatus": coding("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "active", "Active"),
            "verificationStatus": coding("http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "confirmed", "Confirmed"),
            "type": "allergy",
            "category": [category],
            "criticality": if reaction_code == "39579001" { "high" } else { "low" },
            "code": coding(SNOMED, code, display),
            "patient": reference(&patient_url),
            "recordedDate": date(rng.range(birth_days, TODAY_DAYS - 1)),
            "reaction": [{
                "manifestation": [coding(SNOMED, reaction_code, reaction_display)],
                "severity": if reaction_code == "39579001" { "severe" } else { "moderate" },
            }],
        });
        builder.add(&mut rng, allergy);
    }
    let medication_count = chronic.len() as i64 + if home_care { 1 } else { rng.range(0, 1) };
    for _ in 0..medication_count {
        let (code, display, dosage) = *rng.pick(MEDICINES);
        let start = rng.range(TODAY_DAYS - 1500, TODAY_DAYS - 10);
        let statement = json!({
            "resourceType": "MedicationStatement",
            "status": "active",
            "category": coding("http://terminology.hl7.org/CodeSystem/medication-statement-category", "community", "Community"),
            "medicationCodeableConcept": coding(SNOMED, code, display),
            "subject": reference(&patient_url),
            "effectivePeriod": {"start": date(start)},
            "dateAsserted": date_time(TODAY_DAYS - rng.range(1, 60), 10 * 60),
            "dosage": [{"text": dosage}],
        });
        builder.add(&mut rng, statement);
    }
    if home_care {
        home_care_records(&mut builder, &mut rng, &patient_url, &given[0], &family);
    }
    PatientRecord {
        identity: Identity {
            nhs_number: nhs,
            family,
            birth_date,
        },
        entries: builder.entries,
    }
}

fn vital_signs(
    builder: &mut Builder,
    rng: &mut Rng,
    patient_url: &str,
    encounter_url: &str,
    at: &str,
    age_years: i64,
) {
    let category = json!([coding(
        "http://terminology.hl7.org/CodeSystem/observation-category",
        "vital-signs",
        "Vital Signs"
    )]);
    let quantity = |value: Value, unit: &str, code: &str| json!({"value": value, "unit": unit, "system": UCUM, "code": code});
    let child = age_years < 12;
    let single = [
        (
            "8867-4",
            "Heart rate",
            quantity(
                tenths(rng.range(if child { 800 } else { 550 }, 1250)),
                "beats/minute",
                "/min",
            ),
        ),
        (
            "9279-1",
            "Respiratory rate",
            quantity(tenths(rng.range(120, 260)), "breaths/minute", "/min"),
        ),
        (
            "8310-5",
            "Body temperature",
            quantity(tenths(rng.range(358, 392)), "Cel", "Cel"),
        ),
        (
            "59408-5",
            "Oxygen saturation in Arterial blood by Pulse oximetry",
            quantity(tenths(rng.range(900, 1000)), "%", "%"),
        ),
    ];
    for (code, display, value) in single {
        let observation = json!({
            "resourceType": "Observation",
            "status": "final",
            "category": category,
            "code": coding(LOINC, code, display),
            "subject": reference(patient_url),
            "encounter": reference(encounter_url),
            "effectiveDateTime": at,
            "valueQuantity": value,
        });
        builder.add(rng, observation);
    }
    let systolic = rng.range(1000, 1800);
    let diastolic = rng.range(550, 1050).min(systolic - 200);
    let pressure = json!({
        "resourceType": "Observation",
        "status": "final",
        "category": category,
        "code": coding(LOINC, "85354-9", "Blood pressure panel with all children optional"),
        "subject": reference(patient_url),
        "encounter": reference(encounter_url),
        "effectiveDateTime": at,
        "component": [
            {"code": coding(LOINC, "8480-6", "Systolic blood pressure"),
             "valueQuantity": quantity(tenths(systolic), "mmHg", "mm[Hg]")},
            {"code": coding(LOINC, "8462-4", "Diastolic blood pressure"),
             "valueQuantity": quantity(tenths(diastolic), "mmHg", "mm[Hg]")},
        ],
    });
    builder.add(rng, pressure);
}

fn home_care_records(
    builder: &mut Builder,
    rng: &mut Rng,
    patient_url: &str,
    given: &str,
    family: &str,
) {
    let start = TODAY_DAYS - rng.range(30, 700);
    let (service, activity) = *rng.pick(VISIT_SERVICES);
    let plan = json!({
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "category": [coding(SNOMED, "736055008", "Home care plan")],
        "title": format!("Home care plan for {given} {family}"),
        "description": "Daily visits to support independent living at home",
        "subject": reference(patient_url),
        "period": {"start": date(start)},
        "activity": [{"detail": {"status": "in-progress", "description": activity}}],
    });
    builder.add(rng, plan);
    let carer = *rng.pick(CARERS);
    let team = json!({
        "resourceType": "CareTeam",
        "status": "active",
        "name": "Home care team",
        "subject": reference(patient_url),
        "period": {"start": date(start)},
        "participant": [
            {"role": [coding(SNOMED, "224578005", "Care worker")], "member": {"display": carer}},
            {"role": [coding(SNOMED, "224535009", "Registered nurse")], "member": {"display": *rng.pick(CARERS)}},
        ],
    });
    builder.add(rng, team);
    for visit in 0..rng.range(3, 7) {
        let day = TODAY_DAYS + visit - 2;
        let minute = rng.range(7 * 60, 21 * 60);
        let past = day < TODAY_DAYS;
        let appointment = json!({
            "resourceType": "Appointment",
            "status": if past { "fulfilled" } else { "booked" },
            "serviceType": [coding(SNOMED, "385763009", service)],
            "description": activity,
            "start": date_time(day, minute),
            "end": date_time(day, minute + 30),
            "minutesDuration": 30,
            "participant": [
                {"actor": reference(patient_url), "status": "accepted"},
                {"actor": {"display": carer}, "status": "accepted"},
            ],
        });
        builder.add(rng, appointment);
    }
}

/// A transaction Bundle of the given entries.
pub fn transaction(entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn nhs_numbers_are_valid_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for index in 0..20_000 {
            let number = nhs_number(7, index);
            assert!(carevault_fhir::nhs_number_is_valid(&number), "{number}");
            assert!(seen.insert(number));
        }
    }

    #[test]
    fn patients_are_deterministic_and_valid() {
        for index in 0..200 {
            let a = patient(42, index);
            let b = patient(42, index);
            assert_eq!(a.entries, b.entries);
            assert!(a.entries.len() <= 70, "{} entries", a.entries.len());
            for entry in &a.entries {
                let mut resource = entry["resource"].clone();
                // References are rewritten by the server; give the validator a relative one.
                rewrite_urns(&mut resource);
                let rt = carevault_fhir::resource_type(resource["resourceType"].as_str().unwrap());
                if let Err(issues) = carevault_fhir::validate(&resource, rt) {
                    panic!("{resource}\n{issues:?}");
                }
            }
        }
    }

    fn rewrite_urns(value: &mut Value) {
        match value {
            Value::String(text) if text.starts_with("urn:uuid:") => {
                *text = "Patient/x".to_owned();
            }
            Value::Array(items) => items.iter_mut().for_each(rewrite_urns),
            Value::Object(map) => map.values_mut().for_each(rewrite_urns),
            _ => {}
        }
    }

    #[test]
    fn dates() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(TODAY_DAYS), "2026-01-01");
        assert_eq!(date(11_016), "2000-02-29");
    }
}
