//! The daemon's lifecycle against the commands around it (issue 10, defect 4): one daemon per
//! pin directory, a teardown that will not pull the data path from under a running daemon, and
//! a daemon that says so when its pins vanish anyway.

use std::{net::SocketAddr, time::Duration};

use balancer_tests::{
    backend::{HttpBackend, HttpConn},
    daemon::Daemon,
    netns::Lan,
    require_root,
};

const VIP: &str = "198.51.100.10";

fn setup() -> (Lan, Vec<HttpBackend>, Daemon) {
    let mut lan = Lan::new(&["client", "lb", "be1", "be2"]);
    let vip = VIP.parse().unwrap();
    let servers = (2..4).map(|h| HttpBackend::start(&lan.hosts[h], &format!("be{}", h - 1), vip, 80)).collect();
    lan.hosts[0].ns.run(&["ip", "route", "add", &format!("{VIP}/32"), "via", "198.18.0.2"]);
    lan.accept_xdp_frames_from(1);
    let config = format!(
        "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"{VIP}:80\"\n\
         [[vip.backend]]\naddress = \"198.18.0.3\"\n[[vip.backend]]\naddress = \"198.18.0.4\"\n"
    );
    let daemon = Daemon::start(&lan.hosts[1].ns, &config, "info");
    (lan, servers, daemon)
}

/// Requests through the VIP on new connections; how many were answered.
fn served(lan: &Lan, n: usize) -> usize {
    let addr: SocketAddr = format!("{VIP}:80").parse().unwrap();
    lan.hosts[0].ns.in_thread(|| (0..n).filter(|_| HttpConn::connect(addr).and_then(|mut c| c.get()).is_ok()).count())
}

/// A second `run` with the same file used to take over the control socket (and remove it on
/// exit) before failing on the metrics port; `teardown` under a running daemon returned 0 and
/// removed the program and maps while the daemon went on saying "done".
#[test]
fn a_second_daemon_changes_nothing_and_teardown_refuses_while_one_runs() {
    require_root!();
    let (lan, _servers, mut daemon) = setup();
    let lb = &lan.hosts[1].ns;
    let pid = daemon.proc.pid();
    let second = Daemon::cli(lb, &["run", "--config", daemon.config.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success() && err.contains(&format!("PID {pid}")), "the second start names the first: {err}");
    assert!(daemon.socket.exists(), "the first daemon's control socket is left alone");
    let status = daemon.ctl(lb, &["status"]);
    assert!(status.status.success(), "the first daemon still answers: {}", String::from_utf8_lossy(&status.stderr));

    let pins = daemon.pins.0.to_str().unwrap().to_owned();
    let refused = Daemon::cli(lb, &["teardown", "--pin-dir", &pins]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains(&format!("PID {pid}")), "{err}");
    assert!(daemon.pins.0.join("FLOWS").exists(), "nothing was removed");
    assert_eq!(served(&lan, 20), 20, "L4 traffic still flows");

    let stopped = Daemon::cli(lb, &["teardown", "--pin-dir", &pins, "--stop"]);
    assert!(stopped.status.success(), "{}", String::from_utf8_lossy(&stopped.stderr));
    assert!(daemon.proc.try_wait().is_some(), "teardown --stop waits for the daemon to exit");
    assert!(!daemon.pins.0.exists(), "then removes the pins");
}

/// Pins removed by hand under a running daemon: it says so in its log and in `status`.
#[test]
fn a_daemon_whose_pins_vanish_says_so_in_its_log_and_status() {
    require_root!();
    let (lan, _servers, mut daemon) = setup();
    let lb = &lan.hosts[1].ns;
    std::fs::remove_dir_all(&daemon.pins.0).unwrap();
    daemon.proc.wait_for_log("removed under the running daemon", Duration::from_secs(5));
    let out = daemon.ctl(lb, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("PROBLEM:") && text.contains("restart the daemon"), "{text}");
}

/// The systemd unit's capability set is enough: the daemon started with only those loads,
/// attaches, balances and answers `status` (the unit's `CapabilityBoundingSet` is read here, so
/// the two cannot drift apart).
#[test]
fn the_units_capabilities_are_enough_to_run() {
    require_root!();
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/balancer.service")).unwrap();
    let caps = unit.lines().find_map(|l| l.strip_prefix("CapabilityBoundingSet=")).expect("a bounding set");
    let set: Vec<String> =
        caps.split_whitespace().map(|c| format!("+{}", c.trim_start_matches("CAP_").to_ascii_lowercase())).collect();
    let bounding = format!("--bounding-set=-all,{}", set.join(","));
    let mut lan = Lan::new(&["client", "lb", "be1", "be2"]);
    let vip = VIP.parse().unwrap();
    let _servers: Vec<HttpBackend> =
        (2..4).map(|h| HttpBackend::start(&lan.hosts[h], &format!("be{}", h - 1), vip, 80)).collect();
    lan.hosts[0].ns.run(&["ip", "route", "add", &format!("{VIP}/32"), "via", "198.18.0.2"]);
    lan.accept_xdp_frames_from(1);
    let config = format!(
        "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"{VIP}:80\"\n\
         [[vip.backend]]\naddress = \"198.18.0.3\"\n[[vip.backend]]\naddress = \"198.18.0.4\"\n"
    );
    let daemon = Daemon::start_wrapped(&lan.hosts[1].ns, &config, &["setpriv", &bounding, "--inh-caps=-all", "--"]);
    let lb = &lan.hosts[1].ns;
    let status = daemon.ctl(lb, &["status"]);
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    assert_eq!(served(&lan, 20), 20);
}

/// `--log-format json`: every line the daemon logs is a JSON object, and table changes name
/// the VIP by its address, one line per VIP whose table changed.
#[test]
fn json_logs_are_one_object_a_line_and_name_vips_by_address() {
    require_root!();
    let mut lan = Lan::new(&["client", "lb", "be1", "be2"]);
    let vip = VIP.parse().unwrap();
    let _servers: Vec<HttpBackend> =
        (2..4).map(|h| HttpBackend::start(&lan.hosts[h], &format!("be{}", h - 1), vip, 80)).collect();
    lan.accept_xdp_frames_from(1);
    let config = format!(
        "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"{VIP}:80\"\n[[vip.backend]]\naddress = \"198.18.0.3\"\n\
         [[vip.backend]]\naddress = \"198.18.0.4\"\n[[vip]]\naddress = \"{VIP}:443\"\n[[vip.backend]]\naddress = \"198.18.0.4\"\n"
    );
    let daemon = Daemon::start_with_args(&lan.hosts[1].ns, &config, &["--log-format", "json"]);
    let lb = &lan.hosts[1].ns;
    assert!(daemon.ctl(lb, &["backend", "set", &format!("{VIP}:80"), "198.18.0.3", "--weight", "7"]).status.success());
    let log = daemon.proc.log();
    let lines: Vec<serde_json::Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    assert!(lines.iter().any(|l| l["message"] == "balancer running"), "{log}");
    let changed: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["message"] == "table rebuilt" || l["message"] == "table written").collect();
    let last = changed.last().expect("a table change");
    assert_eq!(last["vip"], format!("{VIP}:80"), "{log}");
    assert!(
        !changed.iter().any(|l| l["vip"] == format!("{VIP}:443")
            && l["cause"] == "configuration"
            && l["message"] == "table rebuilt"),
        "the unchanged VIP is not logged: {log}"
    );
}
