//! `carevault`: the command line for every operator task.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use carevault_domain::ids::{ClientId, TenantId};
use carevault_domain::store::{ClientStatus, TenantStatus};
use clap::{Parser, Subcommand};

use carevault_cli::runtime::{Runtime, initialise, shutdown_signal};
use carevault_cli::{audit, config, user};

/// mimalloc for the whole process (its `override` feature also serves SQLite's and zstd's
/// `malloc`): glibc's allocator was about 15 % of the server's CPU on reads, and reads over HTTP
/// ran 1.29–1.30× faster with mimalloc (bench/notes.md, "The allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DATA_DIR_ENV: &str = "CAREVAULT_DATA_DIR";

#[derive(Parser)]
#[command(
    name = "carevault",
    version,
    about = "carevault: an encrypted, audited, multi-tenant FHIR R4 clinical record server",
    long_about = "carevault: an encrypted, audited, multi-tenant FHIR R4 clinical record server.\n\n\
                  Start with `carevault serve`: on a fresh machine it creates ./carevault-data \
                  (configuration, keys, SQLite database) and listens on 127.0.0.1:8080."
)]
struct Cli {
    /// The data directory: configuration, database (SQLite) and, in keys/, the key files.
    #[arg(long, global = true, env = DATA_DIR_ENV, default_value = "carevault-data")]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a data directory: configuration, key-encryption key, signing key, database.
    Init {
        /// Use this database instead of the embedded SQLite, e.g. postgres://user@host/db.
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Run the server (initialising the data directory first if it does not exist).
    Serve {
        /// Listen here instead of the configured address (e.g. 127.0.0.1:0 for any free port).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Manage tenants (customer organisations).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage machine clients (SMART Backend Services).
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage people: invitations and setup links.
    #[command(subcommand)]
    User(user::UserCommand),
    /// The tamper-evident audit trail: verify, export, checkpoint.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant with its own data and index keys.
    Create {
        #[arg(long)]
        name: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List tenants.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Stop every client and token of a tenant at once; other tenants are unaffected.
    Quarantine {
        #[arg(long)]
        tenant: String,
    },
    /// Lift a quarantine.
    Release {
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Register a machine client with its public keys (JWK Set) and SMART v2 scopes.
    Register {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        /// A file holding the client's public JWK Set ({"keys": [...]}; RS384 or ES384 keys).
        #[arg(long)]
        jwks: PathBuf,
        /// Space-separated SMART v2 scopes, e.g. "system/Patient.rs system/Encounter.cruds".
        #[arg(long)]
        scope: String,
        #[arg(long)]
        json: bool,
    },
    /// List clients.
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Disable a client: its tokens stop working at once.
    Disable {
        #[arg(long)]
        client: String,
    },
    /// Enable a disabled client again.
    Enable {
        #[arg(long)]
        client: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let data_dir = cli.data_dir;
    match cli.command {
        Command::Init { database_url } => {
            initialise(&data_dir, database_url).await?;
            println!("initialised {}", data_dir.display());
            let runtime = Runtime::open(&data_dir).await?;
            let services = runtime.services()?;
            let link = runtime.setup_link(&services).await?;
            println!(
                "one-time setup link for the first platform administrator (valid 15 minutes):"
            );
            println!("  {link}");
            println!("next: carevault serve --data-dir {}", data_dir.display());
            Ok(())
        }
        Command::Serve { listen } => serve(&data_dir, listen).await,
        Command::Tenant(command) => tenant(&data_dir, command).await,
        Command::Client(command) => client(&data_dir, command).await,
        Command::User(command) => user::run(&data_dir, command).await,
        Command::Audit(command) => audit::run(&data_dir, command).await,
    }
}

fn init_logging(config: &config::Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log.format == "text" {
        builder.init();
    } else {
        builder.json().init();
    }
}

async fn serve(data_dir: &Path, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let fresh = !data_dir.join(config::CONFIG_FILE).exists();
    if fresh {
        initialise(data_dir, None).await?;
        eprintln!("created a new data directory at {}", data_dir.display());
    }
    let mut runtime = Runtime::open(data_dir).await?;
    init_logging(&runtime.config);
    if let Some(listen) = listen {
        runtime.config.server.listen = listen;
    }
    let tls = runtime
        .config
        .server
        .tls
        .as_ref()
        .map(|tls| carevault_server::TlsFiles {
            certificate: data_dir.join(&tls.certificate),
            private_key: data_dir.join(&tls.private_key),
        });
    let listener = carevault_server::Listener::bind(runtime.config.server.listen, tls)?;
    let bound = listener.local_addr()?;
    if listen.is_some() && runtime.config.server.public_url.is_none() {
        // With --listen (possibly port 0) the public URL follows the real bound address.
        runtime.config.server.public_url =
            Some(config::default_public_url(bound, listener.uses_tls()));
    }
    let services = runtime.services()?;
    let base = runtime.config.public_url();
    tracing::info!(
        address = %bound,
        engine = runtime.store.engine(),
        signing_key = %runtime.signing_public_key(),
        "carevault listening"
    );
    println!("carevault is listening on {base}");
    println!("FHIR base: {base}/fhir   token endpoint: {base}/oauth/token");
    if fresh {
        let link = runtime.setup_link(&services).await?;
        println!("one-time setup link for the first platform administrator (valid 15 minutes):");
        println!("  {link}");
    }
    println!(
        "first steps: carevault tenant create --name \"My Organisation\"; then carevault client register (see README)"
    );
    runtime
        .serve(data_dir, &services, listener, shutdown_signal())
        .await
}

fn parse_tenant(text: &str) -> anyhow::Result<TenantId> {
    TenantId::parse(text.trim()).with_context(|| {
        format!("{text:?} is not a tenant id (a UUID); `carevault tenant list` shows them")
    })
}

fn parse_client(text: &str) -> anyhow::Result<ClientId> {
    ClientId::parse(text.trim()).with_context(|| {
        format!("{text:?} is not a client id (a UUID); `carevault client list` shows them")
    })
}

async fn tenant(data_dir: &Path, command: TenantCommand) -> anyhow::Result<()> {
    let runtime = Runtime::open(data_dir).await?;
    let admin = runtime.administration();
    let now = runtime.now_ms();
    match command {
        TenantCommand::Create { name, json } => {
            let tenant = admin.create_tenant(&name, now).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"id": tenant.id.to_string(), "name": tenant.name})
                );
            } else {
                println!("created tenant {} ({})", tenant.id, tenant.name);
            }
        }
        TenantCommand::List { json } => {
            let tenants = admin.list_tenants().await?;
            if json {
                let list: Vec<_> = tenants
                    .iter()
                    .map(|t| {
                        serde_json::json!({"id": t.id.to_string(), "name": t.name, "status": t.status.as_str()})
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                for t in tenants {
                    println!("{}  {:<12} {}", t.id, t.status.as_str(), t.name);
                }
            }
        }
        TenantCommand::Quarantine { tenant } => {
            let id = parse_tenant(&tenant)?;
            admin
                .set_tenant_status(id, TenantStatus::Quarantined, now)
                .await?;
            println!("tenant {id} quarantined: its clients and tokens no longer work");
        }
        TenantCommand::Release { tenant } => {
            let id = parse_tenant(&tenant)?;
            admin
                .set_tenant_status(id, TenantStatus::Active, now)
                .await?;
            println!("tenant {id} released");
        }
    }
    Ok(())
}

async fn client(data_dir: &Path, command: ClientCommand) -> anyhow::Result<()> {
    let runtime = Runtime::open(data_dir).await?;
    let admin = runtime.administration();
    let now = runtime.now_ms();
    match command {
        ClientCommand::Register {
            tenant,
            name,
            jwks,
            scope,
            json,
        } => {
            let tenant = parse_tenant(&tenant)?;
            let jwks_text = std::fs::read_to_string(&jwks)
                .with_context(|| format!("cannot read the JWK Set file {}", jwks.display()))?;
            if jwks_text.contains("\"d\"") {
                bail!(
                    "{} looks like it holds a private key (\"d\"): register only the public keys",
                    jwks.display()
                );
            }
            let client = admin
                .register_client(tenant, &name, &jwks_text, &scope, now)
                .await?;
            let token_url = format!("{}/oauth/token", runtime.config.public_url());
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "client_id": client.id.to_string(),
                        "tenant": client.tenant.to_string(),
                        "scopes": client.scopes,
                        "token_url": token_url,
                    })
                );
            } else {
                println!(
                    "registered client {} for tenant {}",
                    client.id, client.tenant
                );
                println!("scopes: {}", client.scopes);
                println!(
                    "sign assertions with iss = sub = {} and aud = {token_url}",
                    client.id
                );
            }
        }
        ClientCommand::List { tenant, json } => {
            let tenant = tenant.as_deref().map(parse_tenant).transpose()?;
            let clients = admin.list_clients(tenant).await?;
            if json {
                let list: Vec<_> = clients
                    .iter()
                    .map(|c| {
                        serde_json::json!({
                            "client_id": c.id.to_string(), "tenant": c.tenant.to_string(),
                            "name": c.name, "scopes": c.scopes, "status": c.status.as_str()
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                for c in clients {
                    println!(
                        "{}  {}  {:<9} {}  [{}]",
                        c.id,
                        c.tenant,
                        c.status.as_str(),
                        c.name,
                        c.scopes
                    );
                }
            }
        }
        ClientCommand::Disable { client } => {
            let id = parse_client(&client)?;
            admin
                .set_client_status(&id, ClientStatus::Disabled, now)
                .await?;
            println!("client {id} disabled: its tokens no longer work");
        }
        ClientCommand::Enable { client } => {
            let id = parse_client(&client)?;
            admin
                .set_client_status(&id, ClientStatus::Active, now)
                .await?;
            println!("client {id} enabled");
        }
    }
    Ok(())
}
