//! `meridian serve` and `meridian demo`: load the configuration, then hand it to the
//! library's server (`meridian::serve`).

use meridian::config::Overrides;

use super::{Cli, load_config};

pub fn serve(cli: &Cli, overrides: &Overrides) -> anyhow::Result<()> {
    let config = load_config(&cli.config, overrides)
        .map_err(|_| anyhow::anyhow!("the configuration did not load"))?;
    meridian::serve::run(config, &cli.config, overrides)
}

/// `meridian demo`: see `meridian::demo`.
pub fn demo(cli: &Cli, overrides: &Overrides) -> anyhow::Result<()> {
    let config = load_config(&cli.config, overrides)
        .map_err(|_| anyhow::anyhow!("the configuration did not load"))?;
    meridian::demo::run(&config)
}
