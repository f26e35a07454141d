//! Test support: builds proof values that only authentication builds in production.
//! Compiled only with the `test-support` feature, which only dev-dependencies enable.

use crate::ids::TenantId;
use crate::principal::TenantScope;

pub fn scope_for(tenant: TenantId) -> TenantScope {
    TenantScope::new(tenant)
}
