//! The `idoctor-gate` binary: `serve` (the default), `check-config`.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

use idoctor_gate::config::Config;
use idoctor_gate::proxy::routes::RouteTable;

#[derive(Parser)]
#[command(
    name = "idoctor-gate",
    version,
    about = "Accounts, keys, plans, payments and quota metering in front of the iDoctor backend"
)]
struct Cli {
    /// The configuration file.
    #[arg(
        long,
        short,
        global = true,
        default_value = "proxy.toml",
        env = "GATE_CONFIG"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default).
    Serve,
    /// Validate the configuration and print the route table.
    CheckConfig,
    /// Create a superuser (or promote an existing account). The password is read from
    /// GATE_ADMIN_PASSWORD, or from the first line of standard input.
    CreateAdmin {
        #[arg(long)]
        email: String,
        #[arg(long)]
        username: String,
    },
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("invalid configuration:\n{e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => match RouteTable::build(&config) {
            Ok(table) => {
                println!("{}: ok", config.source);
                print!("{}", table.describe());
                for m in &config.mounts {
                    let fallback = m.fallback.as_deref().unwrap_or("none");
                    println!(
                        "line {}: static {} <- {} (history fallback: {fallback})",
                        m.line,
                        m.at,
                        m.dir.display()
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("invalid configuration:\n{e}");
                ExitCode::from(2)
            }
        },
        Command::Serve => serve(config, cli.config),
        Command::CreateAdmin { email, username } => create_admin(config, &email, &username),
    }
}

/// glibc's malloc, told to give big blocks back. A password hash takes a 19 MiB block
/// (argon2's memory); by default glibc raises its mmap threshold after the first such block is
/// freed, so later ones come from the heap and stay resident: measured, each of the first
/// logins added 19 MiB to an idle gate's RSS until it held some 100 MiB more. With a fixed
/// threshold every block of 4 MiB or more is mapped for its use and unmapped after; the heap
/// (hyper's buffers are at most 400 KiB) keeps up to 16 MiB free at its top before trimming.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            None
        }
    }
}

fn create_admin(config: Config, email: &str, username: &str) -> ExitCode {
    let password = match std::env::var("GATE_ADMIN_PASSWORD") {
        Ok(p) if !p.is_empty() => p,
        _ => {
            let mut line = String::new();
            if std::io::stdin().read_line(&mut line).is_err() || line.trim().is_empty() {
                eprintln!("give the password in GATE_ADMIN_PASSWORD or on standard input");
                return ExitCode::from(2);
            }
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    rt.block_on(async move {
        let store = match idoctor_gate::store::Store::connect(&config.database.url, 2).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let auth = match idoctor_gate::auth::AuthService::new(std::sync::Arc::new(config), store) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        match auth.create_admin(email, username, &password).await {
            Ok(user) => {
                println!(
                    "superuser {} ({}) id {}",
                    user.username, user.email, user.id
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}", e.detail);
                ExitCode::from(2)
            }
        }
    })
}

fn serve(config: Config, path: PathBuf) -> ExitCode {
    idoctor_gate::telemetry::init();
    // Worker 0's event loop; `server::start` starts the other workers' threads.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let upstream = config.upstream.url.clone();
        let running = match idoctor_gate::server::start(config).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(addr = %running.addr, upstream = %upstream, workers = running.workers(), "idoctor-gate listening");
        serve_until_stopped(&running, &path).await;
        running.shutdown();
        running.stopped().await;
        ExitCode::SUCCESS
    })
}

/// Reloads the configuration on SIGHUP (validated first; a bad file is refused and the old one
/// keeps serving) until SIGTERM or SIGINT.
async fn serve_until_stopped(running: &idoctor_gate::server::RunningGate, path: &std::path::Path) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM received"); return; }
            _ = int.recv() => { tracing::info!("SIGINT received"); return; }
            _ = hup.recv() => {
                let checked = Config::load(path).and_then(|c| RouteTable::build(&c).map(|_| c));
                match checked {
                    Err(e) => tracing::error!(config = %path.display(), problems = %e, "reload refused: the old configuration keeps serving"),
                    Ok(config) => match running.reload(config).await {
                        Ok(()) => tracing::info!(config = %path.display(), "configuration reloaded"),
                        Err(e) => tracing::error!(config = %path.display(), problem = %e, "reload refused: the old configuration keeps serving"),
                    },
                }
            }
        }
    }
}
