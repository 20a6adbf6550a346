//! The `meridian` command: parsing and dispatch live in `cli`, the server in the
//! library (`meridian::serve`).

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    cli::run(cli::Cli::parse())
}
