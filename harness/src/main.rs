use std::process::ExitCode;

use csi_sanity::{run, Config};

fn main() -> ExitCode {
    let mut config = Config::default();
    let mut rest = vec!["csi-sanity".to_string()];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let trimmed = arg.trim_start_matches('-');
        let (key, inline) = match trimmed.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (trimmed.to_string(), None),
        };
        if key == "csi.endpoint" || key == "csi.controllerendpoint" {
            let Some(value) = inline.or_else(|| args.next()) else {
                eprintln!("csi-sanity: --{key} needs a value");
                return ExitCode::from(2);
            };
            if key == "csi.endpoint" {
                config.endpoint = Some(value);
            } else {
                config.controller_endpoint = Some(value);
            }
        } else {
            rest.push(arg);
        }
    }
    config.args = libtest_mimic::Arguments::from_iter(rest);
    match run(config) {
        Ok(report) => {
            println!(
                "{} passed, {} failed, {} skipped",
                report.passed, report.failed, report.skipped
            );
            if report.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("csi-sanity: {e:#}");
            ExitCode::from(2)
        }
    }
}
