//! End-to-end tests: the real binary, real HTTP, real SQLite files and PostgreSQL databases.
//! One test binary for the whole tree (each binary links everything).

mod at_rest;
mod audit;
mod audit_chain;
mod audit_retention;
mod audit_search;
mod browser;
mod common;
mod fhir_api;
mod fhirpy;
mod hl7_examples;
mod isolation;
mod oauth;
mod operations;
mod people;
mod search;
mod tamper;
mod transactions;
