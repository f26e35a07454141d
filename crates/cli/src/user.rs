//! `carevault user …`: invitations for people, and a fresh setup link.

use std::path::Path;

use anyhow::Context;
use carevault_domain::ids::TenantId;
use carevault_domain::people::{Inviter, Role, parse_roles};
use clap::Subcommand;

use crate::runtime::Runtime;

#[derive(Subcommand)]
pub enum UserCommand {
    /// Invite a person: prints a one-time link where they set their password and enrol.
    Invite {
        /// The tenant they join (omit with --role platform_operator for supplier staff).
        #[arg(long)]
        tenant: Option<String>,
        /// One or more of clinician, carer, tenant_admin, security_officer, platform_operator
        /// (comma-separated).
        #[arg(long)]
        role: String,
        /// Their email address (their sign-in name).
        #[arg(long)]
        email: String,
        /// Their name as colleagues know it.
        #[arg(long, default_value = "")]
        name: String,
        /// Their Practitioner resource id, linking a carer to their care teams and visits.
        #[arg(long)]
        practitioner: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A new one-time setup link for a platform administrator (valid 15 minutes).
    SetupLink,
    /// List the people of a tenant (or the supplier's staff with no --tenant).
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

fn parse_tenant(text: Option<&str>) -> anyhow::Result<TenantId> {
    match text {
        None => Ok(TenantId::platform()),
        Some(text) => TenantId::parse(text.trim()).with_context(|| {
            format!("{text:?} is not a tenant id (a UUID); `carevault tenant list` shows them")
        }),
    }
}

pub async fn run(data_dir: &Path, command: UserCommand) -> anyhow::Result<()> {
    let runtime = Runtime::open(data_dir).await?;
    let services = runtime.services()?;
    match command {
        UserCommand::Invite {
            tenant,
            role,
            email,
            name,
            practitioner,
            json,
        } => {
            let tenant = parse_tenant(tenant.as_deref())?;
            let roles = parse_roles(&role).with_context(|| {
                format!(
                    "{role:?} is not a list of roles; use one or more of {} separated by commas",
                    Role::ALL.map(Role::as_str).join(", ")
                )
            })?;
            let invitation = services
                .identity
                .invite(
                    Inviter::Operator,
                    tenant,
                    &email,
                    &name,
                    &roles,
                    practitioner.as_deref(),
                    None,
                    runtime.now_ms(),
                )
                .await
                .map_err(|error| anyhow::anyhow!("{error}"))?;
            let link = runtime.invitation_link(&invitation);
            if json {
                println!(
                    "{}",
                    serde_json::json!({"link": link, "expires_ms": invitation.expires_ms})
                );
            } else {
                println!("invitation for {email} ({role}); send them this one-time link:");
                println!("  {link}");
            }
        }
        UserCommand::SetupLink => {
            let link = runtime.setup_link(&services).await?;
            println!("one-time setup link for a platform administrator (valid 15 minutes):");
            println!("  {link}");
        }
        UserCommand::List { tenant, json } => {
            let tenant = parse_tenant(tenant.as_deref())?;
            let people = runtime.people.list_people(tenant).await?;
            if json {
                let list: Vec<_> = people
                    .iter()
                    .map(|person| {
                        serde_json::json!({
                            "id": person.id.to_string(),
                            "email": person.email,
                            "roles": person.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                            "status": person.status.as_str(),
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                for person in people {
                    let roles: Vec<&str> = person.roles.iter().map(|r| r.as_str()).collect();
                    println!(
                        "{}  {:<9} {}  [{}]",
                        person.id,
                        person.status.as_str(),
                        person.email,
                        roles.join(",")
                    );
                }
            }
        }
    }
    Ok(())
}
