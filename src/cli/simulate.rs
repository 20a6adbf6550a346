//! `meridian simulate`: a game-day scenario replayed on a virtual clock.

use std::process::ExitCode;

use meridian::config::Overrides;

use super::{Cli, load_snapshot};

pub fn run(
    cli: &Cli,
    overrides: &Overrides,
    scenario: &std::path::Path,
    svg: Option<&std::path::Path>,
    json: bool,
    spill: bool,
) -> ExitCode {
    let Some((_, snapshot)) = load_snapshot(cli, overrides) else {
        return ExitCode::FAILURE;
    };
    let scenario = match meridian::simulate::Scenario::load(scenario, &snapshot) {
        Ok(s) => s,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!("{} errors", errors.len());
            return ExitCode::FAILURE;
        }
    };
    let report = match meridian::simulate::run(&snapshot, &scenario, spill) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = svg
        && let Err(e) = std::fs::write(path, meridian::simulate::render_svg(&report))
    {
        eprintln!("{}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(j) => println!("{j}"),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", meridian::simulate::render_text(&report));
    }
    ExitCode::SUCCESS
}
