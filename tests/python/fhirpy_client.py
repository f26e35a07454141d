#!/usr/bin/env python3
"""Drives a running carevault server with the fhirpy client (SyncFHIRClient).

Gets a SMART Backend Services token itself (an ES384 client assertion signed with PyJWT
from a PKCS#8 DER private key), then creates, reads, searches by family and birthdate,
updates and deletes a Patient, and posts a transaction Bundle. Every step is asserted;
the script exits 0 only when all of them hold. Run by crates/cli/tests/e2e/fhirpy.rs.

    pip install -r tests/python/requirements.txt
    python3 tests/python/fhirpy_client.py --base http://127.0.0.1:PORT/fhir \
        --token-url http://127.0.0.1:PORT/oauth/token --client-id ID --key key.der [--kid KID]
"""

import argparse
import sys
import time
import uuid

try:
    import jwt
    import requests
    from cryptography.hazmat.primitives.serialization import load_der_private_key
    from fhirpy import SyncFHIRClient
    from fhirpy.base.exceptions import ResourceNotFound
except ImportError as error:  # The Rust test looks for this exact advice.
    print(
        f"fhirpy_client.py: missing Python dependency ({error}); "
        "run `pip install -r tests/python/requirements.txt`",
        file=sys.stderr,
    )
    sys.exit(3)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def step(message):
    print(f"ok: {message}", flush=True)


def get_token(token_url, client_id, key_path, kid, scope):
    """Exchanges a freshly signed client assertion for an access token."""
    with open(key_path, "rb") as handle:
        key = load_der_private_key(handle.read(), password=None)
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "exp": now + 60,
        "jti": str(uuid.uuid4()),
    }
    headers = {"kid": kid} if kid else None
    assertion = jwt.encode(claims, key, algorithm="ES384", headers=headers)
    response = requests.post(
        token_url,
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
            "scope": scope,
        },
        timeout=30,
    )
    assert response.status_code == 200, f"token: {response.status_code} {response.text}"
    body = response.json()
    assert body.get("token_type", "").lower() == "bearer", body
    assert body.get("access_token"), body
    return body["access_token"]


def without_meta(resource):
    """A plain dict of the resource without meta (which the server owns)."""
    plain = dict(resource.serialize() if hasattr(resource, "serialize") else resource)
    plain.pop("meta", None)
    return plain


def run(args):
    token = get_token(args.token_url, args.client_id, args.key, args.kid, args.scope)
    step("token from the token endpoint with a signed ES384 assertion")
    client = SyncFHIRClient(args.base, authorization=f"Bearer {token}")

    # A family name no other patient on this server shares, so search results are exact.
    family = f"Fhirpy{uuid.uuid4().hex[:12]}"
    birth_date = "1961-07-14"

    # Create.
    patient = client.resource(
        "Patient",
        name=[{"family": family, "given": ["Ada"]}],
        gender="female",
        birthDate=birth_date,
    )
    patient.save()
    assert patient.id, f"create returned no id: {patient.serialize()}"
    assert patient["meta"]["versionId"] == "1", patient.serialize()
    step(f"create Patient/{patient.id}")

    # Read: what comes back equals what the create returned.
    read = client.reference("Patient", patient.id).to_resource()
    assert read.serialize() == patient.serialize(), (read.serialize(), patient.serialize())
    assert read["name"][0]["family"] == family
    step("read equals the created resource")

    # Search by family AND birthdate finds exactly this patient; a wrong birthdate finds none.
    found = client.resources("Patient").search(family=family, birthdate=birth_date).fetch_all()
    assert [p.id for p in found] == [patient.id], [p.serialize() for p in found]
    none = client.resources("Patient").search(family=family, birthdate="1961-07-15").fetch_all()
    assert none == [], [p.serialize() for p in none]
    step("search by family and birthdate finds exactly the created patient")

    # Update bumps meta.versionId.
    patient["gender"] = "other"
    patient.save()
    assert patient["meta"]["versionId"] == "2", patient.serialize()
    again = client.reference("Patient", patient.id).to_resource()
    assert again["gender"] == "other" and again["meta"]["versionId"] == "2", again.serialize()
    step("update bumps meta.versionId to 2")

    # Delete, then a read is not-found/gone (fhirpy raises ResourceNotFound for 404 and 410).
    patient.delete()
    try:
        client.reference("Patient", patient.id).to_resource()
    except ResourceNotFound:
        pass
    else:
        raise AssertionError("read after delete should fail with 404/410")
    step("delete, then read raises ResourceNotFound")

    # A transaction: a Patient with a urn:uuid fullUrl and an Encounter that references it.
    urn = f"urn:uuid:{uuid.uuid4()}"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": urn,
                "resource": {
                    "resourceType": "Patient",
                    "name": [{"family": f"{family}Tx", "given": ["Bea"]}],
                    "birthDate": "1980-01-02",
                },
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {
                    "resourceType": "Encounter",
                    "status": "finished",
                    "class": {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                        "code": "AMB",
                    },
                    "subject": {"reference": urn},
                },
                "request": {"method": "POST", "url": "Encounter"},
            },
        ],
    }
    reply = client.execute("/", method="post", data=bundle)
    assert reply["resourceType"] == "Bundle", reply
    assert reply["type"] == "transaction-response", reply
    entries = reply["entry"]
    assert len(entries) == 2, reply
    for entry in entries:
        assert entry["response"]["status"].startswith("201"), entry
    # response.location is Type/id/_history/n (relative or absolute).
    locations = [entry["response"]["location"] for entry in entries]
    patient_id = locations[0].split("Patient/", 1)[1].split("/", 1)[0]
    encounter_id = locations[1].split("Encounter/", 1)[1].split("/", 1)[0]
    encounter = client.reference("Encounter", encounter_id).to_resource()
    subject = encounter["subject"]["reference"]
    assert subject == f"Patient/{patient_id}", f"subject not rewritten: {subject}"
    tx_patient = client.reference("Patient", patient_id).to_resource()
    assert tx_patient["name"][0]["family"] == f"{family}Tx", tx_patient.serialize()
    step(f"transaction: transaction-response, Encounter.subject rewritten to {subject}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--base", required=True, help="FHIR base URL, e.g. http://host/fhir")
    parser.add_argument("--token-url", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--key", required=True, help="PKCS#8 DER ES384 private key file")
    parser.add_argument("--kid", default=None, help="key id of the registered JWK")
    parser.add_argument("--scope", default="system/*.cruds")
    run(parser.parse_args())
    print("fhirpy: all steps passed", flush=True)


if __name__ == "__main__":
    main()
