use std::process::ExitCode;

use csi_sanity::cli::{self, Command};

fn main() -> ExitCode {
    // `csi-sanity load ...` is the load mode, with flags of its own.
    if std::env::args().nth(1).as_deref() == Some("load") {
        return csi_sanity::load::main(std::env::args().skip(2).collect());
    }
    let config = match cli::parse(std::env::args().skip(1)) {
        Ok(Command::Run(config)) => config,
        Ok(Command::Version) => {
            println!("Version = {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Command::Help) => {
            print!("{}", cli::help_text());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("csi-sanity: {e}\nRun csi-sanity --help for the flags.");
            return ExitCode::from(2);
        }
    };
    let mut config = config;
    config.command_line = std::iter::once("csi-sanity".to_string())
        .chain(std::env::args().skip(1))
        .map(|a| {
            if a.contains(|c: char| c.is_whitespace() || "'\"$|&;()<>*?[]".contains(c)) {
                format!("'{}'", a.replace('\'', "'\\''"))
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    match csi_sanity::run(*config) {
        Ok(report) if report.success() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("csi-sanity: {e:#}");
            ExitCode::from(2)
        }
    }
}
