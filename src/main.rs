use std::process::ExitCode;

use clap::Parser;
use nova::app::{shutdown_signal, Application, Settings};
use nova::config::{jwt_secret, AdminCommand, Cli, Command};
use nova_commands::user::credentials::{Argon2Config, Passwords, Tokens};
use nova_commands::user::UserCommands;
use nova_commands::CommandContext;
use nova_infra::db::Database;
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

async fn run(cli: Cli) -> Result<(), nova::app::BoxError> {
    match cli.command {
        Command::Serve(args) => {
            let secret = jwt_secret(&cli.db, args.jwt_secret.clone())?;
            let app = Application::build(Settings {
                database_url: cli.db.url(),
                listen: args.listen.clone(),
                jwt_secret: secret,
                argon2: Argon2Config {
                    memory_kib: args.argon2_memory_kib,
                    iterations: args.argon2_iterations,
                    parallelism: args.argon2_parallelism,
                },
                max_body_bytes: args.max_body_bytes,
                access_ttl: chrono::Duration::seconds(args.access_ttl_secs),
                refresh_ttl: chrono::Duration::seconds(args.refresh_ttl_secs),
            })
            .await?;
            tracing::info!(addr = %app.local_addr()?, "nova listening");
            app.run_until(shutdown_signal()).await?;
            tracing::info!("nova stopped");
            Ok(())
        }
        Command::Migrate => {
            let db = Database::connect(&cli.db.url()).await?;
            db.migrate().await?;
            db.close().await;
            if cli.db.json {
                println!("{}", serde_json::json!({"migrated": true}));
            } else {
                println!("migrations applied");
            }
            Ok(())
        }
        Command::Admin(AdminCommand::ImportUser {
            username,
            sha256,
            display_name,
        }) => {
            let db = Database::connect(&cli.db.url()).await?;
            db.migrate().await?;
            // Importing hashes nothing and issues no token; placeholder keys suffice.
            let users = UserCommands::new(
                db.store.clone(),
                Passwords::new(Argon2Config::default())?,
                Tokens::new(
                    &secrecy::SecretString::from(uuid::Uuid::new_v4().to_string()),
                    chrono::Duration::minutes(15),
                    chrono::Duration::days(30),
                ),
            );
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
