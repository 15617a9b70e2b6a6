//! `capsule-operator`: parses the command line; the start-up itself is in `startup`.

use capsule_operator::startup::{self, RunArgs};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "capsule-operator",
    version,
    about = "Runs pools of pre-warmed Python workers on Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers and the HTTP server.
    Run(Box<RunArgs>),
    /// Print the CRDs as YAML.
    Crd,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", capsule_crds::crds_yaml());
            Ok(())
        }
        Command::Run(args) => startup::run(*args).await,
    }
}
