#!/usr/bin/env bash
# Fetches the official HL7 FHIR R4 examples (npm package hl7.fhir.r4.examples@4.0.1) and
# unpacks them into target/hl7-examples (so target/hl7-examples/package/*.json exist).
# Idempotent: does nothing when they are already there. Prints the folder, for
#   export CAREVAULT_HL7_EXAMPLES="$(bash tests/fetch-hl7-examples.sh)"
set -euo pipefail

PACKAGE="hl7.fhir.r4.examples@4.0.1"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/target/hl7-examples"

if [ ! -f "$dest/package/package.json" ] || [ ! -f "$dest/package/Patient-example.json" ]; then
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    # npm prints the tarball's name on stdout; everything else goes to stderr.
    tarball="$(cd "$work" && npm pack --silent "$PACKAGE" | tail -n 1)"
    rm -rf "$dest"
    mkdir -p "$dest"
    tar xzf "$work/$tarball" -C "$dest"
fi

echo "$dest"
