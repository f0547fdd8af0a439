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
