//! The command line as a shell user meets it, without a daemon.

use balancer_tests::daemon::balancer_bin;

/// `balancer man | head` printed "Broken pipe" errors: a command's output cut short by its
/// reader ends quietly. (`| true`: a reader that is gone before the first write.)
#[test]
fn output_piped_into_head_ends_quietly() {
    let bin = balancer_bin();
    for cmd in ["man", "completions bash", "--help"] {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{} {cmd} | true", bin.display()))
            .output()
            .expect("sh");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.is_empty(), "`balancer {cmd} | head` wrote to stderr: {err}");
    }
}

/// Issue 15: a page for every subcommand and `balancer.toml(5)`, each rendering without a
/// warning, and no page naming one that is not there.
#[test]
fn man_writes_a_page_per_subcommand_and_the_config_page() {
    let dir = std::env::temp_dir().join(format!("bt-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out =
        std::process::Command::new(balancer_bin()).args(["man", "--dir"]).arg(&dir).output().expect("balancer man");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pages: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    for want in ["balancer.1", "balancer-run.1", "balancer-backend-set.1", "balancer-import.1", "balancer.toml.5"] {
        assert!(pages.iter().any(|p| p == want), "{want} missing from {pages:?}");
    }
    for page in &pages {
        let text = std::fs::read_to_string(dir.join(page)).unwrap();
        // Every `name(section)` a page cites, as roff writes it (`balancer\-run(1)`).
        for cited in text.split(|c: char| c.is_whitespace() || c == ',').filter_map(|w| {
            let w = w.replace("\\fB", "").replace("\\fR", "").replace("\\-", "-");
            let (name, rest) = w.split_once('(')?;
            (name.starts_with("balancer") && rest.starts_with(['1', '5'])).then(|| format!("{name}.{}", &rest[..1]))
        }) {
            assert!(pages.contains(&cited), "{page} cites {cited}, which is not written");
        }
        let shown = std::process::Command::new("man")
            .args(["--warnings", "-l"])
            .arg(dir.join(page))
            .env("MANWIDTH", "100")
            .env("MANPAGER", "cat")
            .output()
            .expect("man");
        let warnings = String::from_utf8_lossy(&shown.stderr);
        assert!(shown.status.success() && warnings.is_empty(), "{page}: {warnings}");
    }
    let config = std::fs::read_to_string(dir.join("balancer.toml.5")).unwrap();
    for setting in ["interfaces", "flow_insert_limit", "answer_ping", "interface_mtu", "[vip.health]"] {
        assert!(config.contains(setting), "balancer.toml(5) documents {setting}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 15: a usage error and a configuration error exited with the same code (2), so a
/// script (or systemd's `RestartPreventExitStatus`) could not tell them apart.
#[test]
fn usage_errors_and_configuration_errors_exit_differently() {
    let usage = std::process::Command::new(balancer_bin()).args(["check", "--no-such-flag"]).output().unwrap();
    assert_eq!(usage.status.code(), Some(2), "{}", String::from_utf8_lossy(&usage.stderr));
    let path = std::env::temp_dir().join(format!("bt-exit-{}.toml", std::process::id()));
    std::fs::write(&path, "interfaces = []\n").unwrap();
    let config = std::process::Command::new(balancer_bin()).arg("check").arg("--config").arg(&path).output().unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(config.status.code(), Some(78), "{}", String::from_utf8_lossy(&config.stderr));
}
