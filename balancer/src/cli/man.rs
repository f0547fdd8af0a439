//! `balancer man`: the manual pages, generated from the same definitions as `--help` (one page
//! per subcommand, as `clap_mangen` renders them) and, for `balancer.toml(5)`, from the annotated
//! example configuration the repository ships, so no page can drift from what it documents.

use std::{io::Write as _, path::Path};

use anyhow::{Context as _, Result};
use clap::CommandFactory as _;

use super::args::Cli;

/// `examples/balancer.toml`: every setting with a comment saying what it does.
const EXAMPLE: &str = include_str!("../../../examples/balancer.toml");

/// The top page on standard output, or every page into `dir`.
pub fn man(dir: Option<&Path>) -> Result<()> {
    let Some(dir) = dir else {
        return clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()).context("writing the man page");
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))?;
    let path = dir.join("balancer.toml.5");
    std::fs::write(&path, config_page()).with_context(|| format!("writing {}", path.display()))?;
    let mut names: Vec<String> =
        std::fs::read_dir(dir)?.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
    names.sort();
    let mut out = std::io::stdout().lock();
    for n in names {
        writeln!(out, "{}", dir.join(n).display())?;
    }
    Ok(())
}

/// `balancer.toml(5)`: what the file is, then the example itself, whose comments document
/// each setting.
pub fn config_page() -> String {
    let mut page = String::from(concat!(
        ".TH balancer.toml 5 \"\" \"balancer ",
        env!("CARGO_PKG_VERSION"),
        "\"\n.SH NAME\nbalancer.toml \\- configuration of the balancer daemon\n.SH DESCRIPTION\n",
        "\\fBbalancer run \\-c FILE\\fR reads one TOML file: top-level settings, then one \\fB[[vip]]\\fR table per ",
        "virtual service with its \\fB[[vip.backend]]\\fR entries, health check and, for HTTP session affinity, ",
        "\\fB[vip.l7]\\fR. \\fBbalancer check \\-c FILE\\fR validates a file as a reload would; errors name the file, ",
        "line and field. \\fBbalancer import\\fR writes one from a mod_jk, httpd or nginx configuration.\n",
        ".SH EXAMPLE\nEvery setting, with what it does and its default, as in examples/balancer.toml:\n.PP\n.nf\n",
    ));
    for line in EXAMPLE.lines() {
        // roff: a leading dot or quote would be a request; backslashes are escapes.
        let escaped = line.replace('\\', "\\e");
        if escaped.starts_with('.') || escaped.starts_with('\'') {
            page.push_str("\\&");
        }
        page.push_str(&escaped);
        page.push('\n');
    }
    page.push_str(".fi\n.SH SEE ALSO\n\\fBbalancer\\fR(1), \\fBbalancer\\-run\\fR(1), \\fBbalancer\\-check\\fR(1), \\fBbalancer\\-import\\fR(1)\n");
    page
}
