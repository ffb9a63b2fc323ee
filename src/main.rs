use std::process::ExitCode;

use clap::Parser;
use nova::app::{shutdown_signal, Application, Components, Settings};
use nova::config::{
    jwt_secret, AdminCommand, AggregatesCommand, Cli, Command, EventsCommand, ProjectionsCommand,
};
use nova_commands::user::credentials::{Argon2Config, Passwords, Tokens};
use nova_commands::user::UserCommands;
use nova_commands::CommandContext;
use nova_event_schemas::user::Role;
use nova_infra::db::Database;
use nova_infra::nats::Names;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_env("NOVA_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json_logs = std::env::var("NOVA_LOG_FORMAT").is_ok_and(|f| f == "json");
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json_logs {
        fmt.json().init();
    } else {
        fmt.init();
    }
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// User commands for operator CLI use: they hash nothing and issue no token, so placeholder
/// keys suffice.
fn offline_user_commands(db: &Database) -> Result<UserCommands, nova::app::BoxError> {
    Ok(UserCommands::new(
        nova_commands::CommandStore::new(db.store.clone()),
        nova_commands::user::vault::Vault::new(db.any.clone()),
        Passwords::new(Argon2Config::default())?,
        Tokens::new(
            &secrecy::SecretString::from(uuid::Uuid::new_v4().to_string()),
            chrono::Duration::minutes(15),
            chrono::Duration::days(30),
        ),
    ))
}

/// Runs relay and/or projectors without the API until SIGINT/SIGTERM.
async fn run_background(
    cli: &Cli,
    components: Components,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), nova::app::BoxError> {
    let app = Application::build(Settings {
        database_url: cli.db.url(),
        search_dir: cli.db.search_dir(),
        search_consumer: cli.db.search_consumer.clone(),
        nats_url: cli.db.nats_url.clone(),
        nats_names: Names::default(),
        listen: String::new(),
        // No API in this process: nothing is signed or verified.
        jwt_secret: secrecy::SecretString::from(uuid::Uuid::new_v4().to_string()),
        argon2: Argon2Config::default(),
        max_body_bytes: 0,
        access_ttl: chrono::Duration::minutes(15),
        refresh_ttl: chrono::Duration::days(30),
        components: components.clone(),
        metrics: Default::default(),
        idempotency_takeover: nova::http::idempotency::DEFAULT_TAKEOVER,
        rate_limits: Default::default(),
        ingest_secret: None,
        clock: nova_infra::clock::Clock::system(),
    })
    .await?;
    tracing::info!(?components, "nova running");
    app.run_until(shutdown).await?;
    tracing::info!("nova stopped");
    Ok(())
}

async fn run(cli: Cli) -> Result<(), nova::app::BoxError> {
    // Installed before anything else: SIGTERM during start-up still means a graceful stop.
    let shutdown = shutdown_signal();
    match cli.command {
        Command::Serve(args) => {
            let secret = jwt_secret(&cli.db, args.jwt_secret.clone())?;
            let components = if args.api_only {
                Components {
                    api: true,
                    relay: false,
                    projections: Some(Vec::new()),
                }
            } else {
                Components::all()
            };
            let app = Application::build(Settings {
                database_url: cli.db.url(),
                search_dir: cli.db.search_dir(),
                search_consumer: cli.db.search_consumer.clone(),
                nats_url: cli.db.nats_url.clone(),
                nats_names: Names::default(),
                listen: args.listen.clone(),
                jwt_secret: secret,
                argon2: Argon2Config {
                    memory_kib: args.argon2_memory_kib,
                    iterations: args.argon2_iterations,
                    parallelism: args.argon2_parallelism,
                    max_concurrent: args.argon2_max_concurrent,
                    queue_timeout: std::time::Duration::from_millis(args.argon2_queue_timeout_ms),
                },
                max_body_bytes: args.max_body_bytes,
                access_ttl: chrono::Duration::seconds(args.access_ttl_secs),
                refresh_ttl: chrono::Duration::seconds(args.refresh_ttl_secs),
                components,
                metrics: nova::app::MetricsAccess {
                    listen: args.metrics_addr.clone(),
                    token: nova::config::metrics_token(args.metrics_token.clone())?,
                },
                idempotency_takeover: std::time::Duration::from_millis(
                    args.idempotency_takeover_ms,
                ),
                rate_limits: args.rate_limits(),
                ingest_secret: args.ingest_secret.clone(),
                clock: nova_infra::clock::Clock::system(),
            })
            .await?;
            if let Some(addr) = app.local_addr() {
                tracing::info!(%addr, "nova listening");
            }
            match app.metrics_addr() {
                Some(addr) => tracing::info!(%addr, "metrics listening"),
                None if args.metrics_token.is_none() => tracing::info!(
                    "/metrics is not served; set NOVA_METRICS_ADDR or NOVA_METRICS_TOKEN"
                ),
                None => {}
            }
            app.run_until(shutdown).await?;
            tracing::info!("nova stopped");
            Ok(())
        }
        Command::Relay => {
            if cli.db.nats_url.is_none() {
                return Err("nova relay needs NOVA_NATS_URL".into());
            }
            run_background(
                &cli,
                Components {
                    api: false,
                    relay: true,
                    projections: Some(Vec::new()),
                },
                shutdown,
            )
            .await
        }
        Command::Project { ref names } => {
            let known: Vec<String> = nova_projections::all()
                .iter()
                .map(|p| p.name().to_owned())
                .chain([nova_projections::search::NAME.to_owned()])
                .collect();
            if let Some(bad) = names.iter().find(|n| !known.contains(n)) {
                return Err(
                    format!("unknown projection {bad}; known: {}", known.join(", ")).into(),
                );
            }
            let projections = (!names.is_empty()).then(|| names.clone());
            run_background(
                &cli,
                Components {
                    api: false,
                    relay: false,
                    projections,
                },
                shutdown,
            )
            .await
        }
        Command::Boundaries => {
            let report = nova::boundaries::check(&nova::boundaries::collect()?);
            if cli.db.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", nova::boundaries::render_text(&report));
            }
            if report.ok {
                Ok(())
            } else {
                Err(format!(
                    "{} ownership violation(s); see the list above",
                    report.violations.len()
                )
                .into())
            }
        }
        Command::Migrate => {
            let db = nova::app::connect(&cli.db.url()).await?;
            db.migrate().await?;
            db.close().await;
            if cli.db.json {
                println!("{}", serde_json::json!({"migrated": true}));
            } else {
                println!("migrations applied");
            }
            Ok(())
        }
        Command::Projections(ProjectionsCommand::Status) => {
            let db = nova::app::connect(&cli.db.url()).await?;
            db.migrate().await?;
            let rows =
                nova_projections::status::status(&db.store, &db.any, nova_policies::CATALOG).await;
            let copies = nova_projections::as_of::list(&db.any).await;
            db.close().await;
            let (rows, copies) = (rows?, copies?);
            if cli.db.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"items": rows, "as_of_copies": copies})
                    )?
                );
            } else {
                println!(
                    "{:<38} {:<10} {:<13} {:>12} {:>12} {:>10} {:>9} {:>6}  state",
                    "projection",
                    "kind",
                    "domain",
                    "checkpoint",
                    "head",
                    "lag",
                    "lag (s)",
                    "parked"
                );
                for r in rows {
                    println!(
                        "{:<38} {:<10} {:<13} {:>12} {:>12} {:>10} {:>9.1} {:>6}  {}",
                        r.projection,
                        r.kind,
                        r.domain.as_str(),
                        r.checkpoint,
                        r.head,
                        r.lag_events,
                        r.lag_seconds,
                        r.dead_letters,
                        r.state
                    );
                }
                if !copies.is_empty() {
                    println!("\nas-of copies (drop with `nova projections drop --id <id>`):");
                    println!(
                        "{:>4}  {:<20} {:<28} {:<9} positions",
                        "id", "projection", "as of", "state"
                    );
                    for c in copies {
                        println!(
                            "{:>4}  {:<20} {:<28} {:<9} {}",
                            c.id,
                            c.projection,
                            nova_infra::readmodel::ts(c.as_of),
                            c.state,
                            positions_text(&c.positions)
                        );
                    }
                }
            }
            Ok(())
        }
        Command::Projections(ProjectionsCommand::Rebuild {
            name,
            as_of: Some(as_of),
        }) => {
            let live = nova_projections::rebuild::find(&name)?;
            let db = nova::app::connect(&cli.db.url()).await?;
            db.migrate().await?;
            let bar = rebuild_bar(
                cli.db.json,
                format!("building {name} as of {}", nova_infra::readmodel::ts(as_of)),
            );
            let report =
                nova_projections::as_of::build(live, &db.store, &db.any, as_of, draw(&bar)).await;
            bar.finish_and_clear();
            db.close().await;
            let report = report?;
            if cli.db.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "{} as of {} is copy {} ({}) up to {} in {:.1}s{}; the live view is untouched",
                    report.copy.projection,
                    nova_infra::readmodel::ts(report.copy.as_of),
                    report.copy.id,
                    report.copy.tables.join(", "),
                    positions_text(&report.copy.positions),
                    report.seconds,
                    if report.resumed { " (resumed)" } else { "" }
                );
            }
            Ok(())
        }
        Command::Projections(ProjectionsCommand::Drop { name, as_of, id }) => {
            let which = match (name, as_of, id) {
                (_, _, Some(id)) => nova_projections::as_of::Which::Id(id),
                (Some(name), Some(at), None) => nova_projections::as_of::Which::At(name, at),
                _ => return Err("give --id <id>, or a projection name with --as-of <time>".into()),
            };
            let db = nova::app::connect(&cli.db.url()).await?;
            db.migrate().await?;
            let dropped = nova_projections::as_of::drop_copy(&db.any, which).await;
            db.close().await;
            let dropped = dropped?;
            if cli.db.json {
                println!("{}", serde_json::to_string_pretty(&dropped)?);
            } else {
                println!(
                    "dropped copy {} of {} as of {} ({})",
                    dropped.id,
                    dropped.projection,
                    nova_infra::readmodel::ts(dropped.as_of),
                    dropped.tables.join(", ")
                );
            }
            Ok(())
        }
        Command::Aggregates(AggregatesCommand::State {
            domain,
            id,
            version,
            as_of,
        }) => {
            let domain = nova_event_schemas::Domain::parse(&domain).ok_or("unknown domain")?;
            let at = nova::timetravel::At::from_params(version, as_of)?;
            let db = nova::app::connect(&cli.db.url()).await?;
            db.migrate().await?;
            let state = nova::timetravel::state_at(&db.store, domain, id, at).await;
            db.close().await;
            let state = state?;
            if cli.db.json {
                println!("{}", serde_json::to_string(&state)?);
            } else {
                println!(
                    "{}.{} {} at version {} (recorded {})",
                    state.domain,
                    state.aggregate_type,
                    state.aggregate_id,
                    state.version,
                    nova_infra::readmodel::ts(state.recorded_at)
                );
                println!("{}", serde_json::to_string_pretty(&state.state)?);
            }
            Ok(())
        }
        Command::Projections(ProjectionsCommand::Rebuild { name, as_of: None }) => {
            let target = nova_projections::rebuild::target(&name)?;
            let db = nova::app::connect(&cli.db.url()).await?;
            db.migrate().await?;
            let bar = rebuild_bar(cli.db.json, format!("rebuilding {name}"));
            let checkpoints = nova_projections::Checkpoints::default();
            let root = nova_infra::search::SearchRoot::new(cli.db.search_dir());
            let report = match nova_projections::rebuild::Lease::take(&db.any, &name).await {
                Ok(lease) => {
                    nova_projections::rebuild::rebuild_target(
                        lease,
                        target,
                        &root,
                        &db.store,
                        &db.any,
                        &checkpoints,
                        draw(&bar),
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            bar.finish_and_clear();
            db.close().await;
            let report = report?;
            if cli.db.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "rebuilt {} up to {} in {:.1}s{}; swapped in",
                    report.projection,
                    positions_text(&report.positions),
                    report.seconds,
                    if report.resumed { " (resumed)" } else { "" }
                );
            }
            Ok(())
        }
        Command::Projections(ProjectionsCommand::Retry { policy }) => {
            let db = nova::app::connect(&cli.db.url()).await?;
            db.migrate().await?;
            let Some(found) = nova::app::policies_over(&db)
                .into_iter()
                .find(|p| p.name() == policy)
            else {
                db.close().await;
                return Err(format!("unknown policy {policy}").into());
            };
            let retried = nova_policies::retry_dead_letters(&*found, &db.store, &db.any).await;
            db.close().await;
            let retried = retried?;
            if cli.db.json {
                println!(
                    "{}",
                    serde_json::json!({"policy": policy, "handled": retried.handled, "failed": retried.failed})
                );
            } else {
                println!(
                    "{policy}: {} parked event(s) handled, {} still failing",
                    retried.handled, retried.failed
                );
            }
            Ok(())
        }
        Command::Admin(AdminCommand::GrantRole { username, role }) => {
            let role = Role::parse(&role).ok_or("role must be admin or analyst")?;
            let db = nova::app::connect(&cli.db.url()).await?;
            db.migrate().await?;
            let users = offline_user_commands(&db)?;
            let ctx = CommandContext::new(Some("cli:admin grant-role".into()), None);
            let done = users.grant_role(&ctx, &username, role).await?;
            db.close().await;
            let changed = done.position.is_some();
            if cli.db.json {
                println!(
                    "{}",
                    serde_json::json!({"username": username, "role": role, "changed": changed, "version": done.version})
                );
            } else if changed {
                println!("granted {role:?} to {username}");
            } else {
                println!("{username} already has {role:?}");
            }
            Ok(())
        }
        Command::Events(EventsCommand::Export {
            domain,
            event_type,
            aggregate_id,
            after,
            until,
            format,
            output,
        }) => {
            let domain = nova_event_schemas::Domain::parse(&domain).ok_or("unknown domain")?;
            let db = nova::app::connect(&cli.db.url()).await?;
            db.migrate().await?;
            let filter = nova::export::ExportFilter {
                domain,
                event_type,
                aggregate_id,
                after,
                until,
            };
            let summary =
                export_events(&db, &filter, &format, output.as_deref(), cli.db.json).await;
            db.close().await;
            let summary = summary?;
            if cli.db.json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                eprintln!(
                    "exported {} event(s) of {}; last position {} (resume with --after {})",
                    summary["events"],
                    summary["domain"],
                    summary["last_position"],
                    summary["last_position"]
                );
            }
            Ok(())
        }
        Command::Admin(AdminCommand::SealHistory) => {
            let db = nova::app::connect(&cli.db.url()).await?;
            db.migrate().await?;
            let keys = nova_commands::user::data_keys::DataKeyVault::new(db.any.clone());
            let sealed =
                nova::app::seal_history(&nova_commands::CommandStore::new(db.store.clone()), &keys)
                    .await;
            db.close().await;
            let sealed = sealed?;
            if cli.db.json {
                println!("{}", serde_json::json!({"sealed": sealed}));
            } else {
                println!("{sealed} event(s) sealed: their personal data is encrypted now");
            }
            Ok(())
        }
        Command::Admin(AdminCommand::EraseUser { user_id, wait }) => {
            let db = nova::app::connect(&cli.db.url()).await?;
            db.migrate().await?;
            let users = offline_user_commands(&db)?;
            let ctx = CommandContext::new(Some("cli:admin erase-user".into()), None);
            let report = nova::erasure::erase_user(
                &db,
                &users,
                &ctx,
                user_id,
                std::time::Duration::from_secs(wait),
            )
            .await;
            db.close().await;
            let report = report?;
            if cli.db.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                if report.erased_now {
                    println!("erased the personal data of {user_id}: its key is destroyed");
                } else {
                    println!("{user_id} was erased before; nothing more to do");
                }
                if report.views_purged {
                    println!("every view has dropped it; database files scrubbed");
                } else {
                    println!(
                        "some views are still behind; they drop it when they catch up \
                         (run again to scrub the database files)"
                    );
                }
            }
            Ok(())
        }
        Command::Admin(AdminCommand::UpgradeCredentials) => {
            let db = nova::app::connect(&cli.db.url()).await?;
            db.migrate().await?;
            let users = offline_user_commands(&db)?;
            let upgraded = users.upgrade_credentials().await?;
            db.close().await;
            if cli.db.json {
                println!("{}", serde_json::to_string(&upgraded)?);
            } else {
                println!(
                    "{} event(s) upgraded: their secrets are in the credentials table",
                    upgraded.rewritten
                );
            }
            Ok(())
        }
        Command::Admin(AdminCommand::ImportUser {
            username,
            sha256,
            display_name,
        }) => {
            let db = nova::app::connect(&cli.db.url()).await?;
            db.migrate().await?;
            let users = offline_user_commands(&db)?;
            let ctx = CommandContext::new(Some("cli:admin import-user".into()), None);
            let (user_id, position) = users
                .import_legacy(&ctx, &username, &sha256, display_name)
                .await?;
            db.close().await;
            if cli.db.json {
                println!(
                    "{}",
                    serde_json::json!({"user_id": user_id, "position": position})
                );
            } else {
                println!("imported {username} as {user_id} (user:{position})");
            }
            Ok(())
        }
    }
}

/// `user:12, post:40`.
fn positions_text(positions: &[(nova_event_schemas::Domain, i64)]) -> String {
    positions
        .iter()
        .map(|(d, p)| format!("{d}:{p}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Draws a rebuild's progress on its bar.
fn draw(bar: &indicatif::ProgressBar) -> impl Fn(nova_projections::rebuild::Progress) + '_ {
    |p| {
        bar.set_length(p.head.max(0) as u64);
        bar.set_position(p.position.max(0) as u64);
    }
}

/// The progress bar of a rebuild (hidden with `--json`).
fn rebuild_bar(json: bool, message: String) -> indicatif::ProgressBar {
    let bar = if json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(0)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {pos}/{len} events  {per_sec}  ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(message);
    bar
}

/// Writes the export page by page (one store page in memory at a time) with a progress bar on
/// stderr (hidden with `--json` or when stderr is not a terminal); answers the summary.
async fn export_events(
    db: &Database,
    filter: &nova::export::ExportFilter,
    format: &str,
    output: Option<&std::path::Path>,
    json: bool,
) -> Result<serde_json::Value, nova::app::BoxError> {
    use std::io::Write;
    let started = std::time::Instant::now();
    let head = db.store.head(filter.domain).await?;
    let mut out: Box<dyn Write> = match output {
        Some(path) => Box::new(std::io::BufWriter::new(std::fs::File::create(path)?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let bar = if json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::with_draw_target(
            Some((head - filter.after).max(0) as u64),
            indicatif::ProgressDrawTarget::stderr(),
        )
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "exporting [{bar:40}] {pos}/{len} positions  {per_sec}  ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    if format == "csv" {
        out.write_all(
            nova::export::csv_line(&nova::export::CSV_HEADER.map(String::from)).as_bytes(),
        )?;
    }
    let mut after = filter.after;
    let mut events = 0u64;
    let mut last_position = filter.after;
    loop {
        let (page, scanned) =
            nova::export::page(&db.store, filter, after, nova::export::PAGE).await?;
        let Some(scanned) = scanned else { break };
        for e in &page {
            if format == "csv" {
                out.write_all(nova::export::csv_line(&nova::export::csv_record(e)).as_bytes())?;
            } else {
                serde_json::to_writer(&mut out, e)?;
                out.write_all(b"\n")?;
            }
            last_position = e.position;
            events += 1;
        }
        bar.set_position((scanned - filter.after).max(0) as u64);
        after = scanned;
    }
    out.flush()?;
    bar.finish_and_clear();
    Ok(serde_json::json!({
        "domain": filter.domain.as_str(),
        "events": events,
        "last_position": last_position,
        "format": format,
        "output": output.map(|p| p.display().to_string()),
        "seconds": started.elapsed().as_secs_f64(),
    }))
}
