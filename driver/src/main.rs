use clap::Parser;
use csi_driver::{logging, server, Config};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    logging::init(config.log_format, &config.log_level);
    match server::run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("csi-driver: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
