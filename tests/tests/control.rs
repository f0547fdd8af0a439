//! The control socket and CLI against the real daemon: live changes with connections open, a
//! rejected reload, `flow`, and the socket refusing non-root users.

use std::{collections::HashMap, net::SocketAddr};

use balancer_tests::{
    backend::{HttpBackend, HttpConn},
    daemon::Daemon,
    netns::{Lan, Netns},
    require_root,
};

const VIP: &str = "198.51.100.10";

fn config() -> String {
    format!(
        "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"{VIP}:80\"\n\
         [[vip.backend]]\naddress = \"198.18.0.3\"\n[[vip.backend]]\naddress = \"198.18.0.4\"\n"
    )
}

fn setup() -> (Lan, Vec<HttpBackend>, Daemon) {
    let mut lan = Lan::new(&["client", "lb", "be1", "be2", "be3"]);
    let vip = VIP.parse().unwrap();
    let servers = (2..5).map(|h| HttpBackend::start(&lan.hosts[h], &format!("be{}", h - 1), vip, 80)).collect();
    lan.hosts[0].ns.run(&["ip", "route", "add", &format!("{VIP}/32"), "via", "198.18.0.2"]);
    lan.accept_xdp_frames_from(1);
    let daemon = Daemon::start(&lan.hosts[1].ns, &config(), "info");
    (lan, servers, daemon)
}

fn ok(out: &std::process::Output) -> String {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn spread(client: &Netns, n: usize) -> HashMap<String, usize> {
    let addr: SocketAddr = format!("{VIP}:80").parse().unwrap();
    client.in_thread(|| {
        let mut m = HashMap::new();
        for _ in 0..n {
            let who = HttpConn::connect(addr).and_then(|mut c| c.get()).unwrap_or_else(|e| format!("failed: {e}"));
            *m.entry(who).or_default() += 1;
        }
        m
    })
}

#[test]
fn live_changes_through_the_cli_keep_every_open_connection() {
    require_root!();
    let (lan, _servers, daemon) = setup();
    let lb = &lan.hosts[1].ns;
    let vip = format!("{VIP}:80");
    let addr: SocketAddr = vip.parse().unwrap();
    let steps: Vec<Vec<&str>> = vec![
        vec!["backend", "add", &vip, "198.18.0.5", "--weight", "300"],
        vec!["backend", "set", &vip, "198.18.0.3", "--weight", "50"],
        vec!["backend", "set", &vip, "198.18.0.4", "--state", "drain"],
        vec!["backend", "set", &vip, "198.18.0.4", "--state", "active"],
        vec!["backend", "del", &vip, "198.18.0.5"],
    ];
    lan.hosts[0].ns.in_thread(|| {
        // Connections open before any change, on every backend they landed on.
        let mut open: Vec<(HttpConn, String)> = (0..12)
            .map(|_| {
                let mut c = HttpConn::connect(addr).expect("connect");
                let who = c.get().expect("first request");
                (c, who)
            })
            .collect();
        for step in &steps {
            ok(&daemon.ctl(lb, step));
            for (i, (c, who)) in open.iter_mut().enumerate() {
                let got = c.get().unwrap_or_else(|e| panic!("connection {i} broke after `{}`: {e}", step.join(" ")));
                assert_eq!(&got, who, "connection {i} moved after `{}`", step.join(" "));
            }
            // Plus new ones, opened after this step and kept through the following ones,
            // except on be3, which the last step removes.
            let mut c = HttpConn::connect(addr).expect("connect");
            let who = c.get().expect("request");
            if who != "be3" {
                open.push((c, who));
            }
        }
    });
    // Drained then re-activated be2, reweighted be1; be3 gone.
    let status: serde_json::Value = serde_json::from_str(&ok(&daemon.ctl(lb, &["--json", "status"]))).unwrap();
    let backends = status["vips"][0]["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 2, "{status:#}");
    assert_eq!(backends[0]["weight"], 50);
    assert_eq!(backends[1]["state"], "active");
    let share0 = backends[0]["share"].as_f64().unwrap();
    assert!((share0 - 100.0 / 3.0).abs() < 1.0, "weights 50:100 give a third of the ring: {share0}");
}

#[test]
fn drain_takes_no_new_connections_and_cli_errors_are_one_clear_line() {
    require_root!();
    let (lan, _servers, daemon) = setup();
    let lb = &lan.hosts[1].ns;
    let vip = format!("{VIP}:80");
    ok(&daemon.ctl(lb, &["backend", "set", &vip, "198.18.0.3", "--state", "drain"]));
    let after = spread(&lan.hosts[0].ns, 40);
    assert_eq!(after.get("be2"), Some(&40), "a drained backend takes no new connection: {after:?}");

    let out = daemon.ctl(lb, &["backend", "set", &vip, "198.18.0.99", "--weight", "1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim(), format!("error: 198.18.0.99 is not a backend of {vip}"));
    let out = daemon.ctl(lb, &["vip", "add", "198.51.100.11:80", "--ring-size", "1000"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a prime"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_rejected_reload_names_the_error_and_traffic_keeps_flowing() {
    require_root!();
    let (lan, _servers, daemon) = setup();
    let lb = &lan.hosts[1].ns;
    daemon.write_config(&config().replace("address = \"198.18.0.4\"", "address = \"198.18.0.4\"\nweight = -1"));
    let out = daemon.ctl(lb, &["reload"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("reload rejected") && err.contains(&format!("{}:", daemon.config.display())), "{err}");
    let after = spread(&lan.hosts[0].ns, 40);
    assert!(after.contains_key("be1") && after.contains_key("be2") && after.len() == 2, "{after:?}");
}

/// Issue 10, defect 1: a reload that fails on the last VIP (an 8-byte cookie key) used to leave
/// the backend removal and the new weight of the same file applied. `check` said the file was ok.
#[test]
fn a_reload_rejected_late_changes_nothing_and_check_rejects_the_same_file() {
    require_root!();
    let (lan, _servers, daemon) = setup();
    let lb = &lan.hosts[1].ns;
    let key = std::env::temp_dir().join(format!("{}-short.key", lb.name()));
    std::fs::write(&key, "8bytes!!").unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let bad = format!(
        "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"{VIP}:80\"\n\
         [[vip.backend]]\naddress = \"198.18.0.3\"\nweight = 7\n\
         [[vip]]\naddress = \"198.51.100.20:80\"\n[vip.l7]\nkey_file = \"{}\"\n\
         [[vip.backend]]\naddress = \"198.18.0.5\"\nport = 8080\nroute = \"r1\"\n",
        key.display()
    );
    daemon.write_config(&bad);
    let check = Daemon::cli(lb, &["check", "--config", daemon.config.to_str().unwrap()]);
    let check_err = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(78), "check must refuse what reload refuses: {check_err}");
    assert!(check_err.contains("8 bytes") && check_err.contains(&*key.to_string_lossy()), "{check_err}");

    let out = daemon.ctl(lb, &["reload"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("reload rejected") && err.contains("8 bytes"), "{err}");
    let status: serde_json::Value = serde_json::from_str(&ok(&daemon.ctl(lb, &["--json", "status"]))).unwrap();
    let vips = status["vips"].as_array().unwrap();
    assert_eq!(vips.len(), 1, "the new VIP must not exist: {status:#}");
    let backends: Vec<(String, u64)> = vips[0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["address"].as_str().unwrap().to_owned(), b["weight"].as_u64().unwrap()))
        .collect();
    assert_eq!(backends, [("198.18.0.3".to_owned(), 100), ("198.18.0.4".to_owned(), 100)], "{status:#}");
    let after = spread(&lan.hosts[0].ns, 40);
    assert!(after.contains_key("be1") && after.contains_key("be2") && after.len() == 2, "{after:?}");
    let _ = std::fs::remove_file(&key);
}

/// `check` makes the daemon's route checks too: a DSR backend the kernel has no route to, or
/// one behind a gateway, is refused by `check` as `reload` refuses it.
#[test]
fn check_refuses_l4_backends_the_daemon_could_not_reach() {
    require_root!();
    let (lan, _servers, daemon) = setup();
    let lb = &lan.hosts[1].ns;
    lb.run(&["ip", "route", "add", "10.77.0.0/16", "via", "198.18.0.4"]);
    for (backend, says) in [("10.99.0.5", "backend 10.99.0.5"), ("10.77.0.5", "routed via 198.18.0.4")] {
        daemon.write_config(&config().replace("198.18.0.4", backend));
        let check = Daemon::cli(lb, &["check", "--config", daemon.config.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&check.stderr);
        assert_eq!(check.status.code(), Some(78), "{err}");
        assert!(err.contains(says), "{err}");
        let reload = daemon.ctl(lb, &["reload"]);
        assert!(!reload.status.success(), "reload refuses it too");
    }
    daemon.write_config(&config());
    assert!(Daemon::cli(lb, &["check", "--config", daemon.config.to_str().unwrap()]).status.success());
}

/// The state and weight of one backend, from `status --json`.
fn backend_of(daemon: &Daemon, lb: &Netns, ip: &str) -> (String, u64) {
    let status: serde_json::Value = serde_json::from_str(&ok(&daemon.ctl(lb, &["--json", "status"]))).unwrap();
    let b = status["vips"][0]["backends"].as_array().unwrap().iter().find(|b| b["address"] == ip).cloned();
    let b = b.unwrap_or_else(|| panic!("{ip} in {status:#}"));
    (b["state"].as_str().unwrap().to_owned(), b["weight"].as_u64().unwrap())
}

/// Issue 10, defect 6: a drain set with the CLI came back `active` on the next reload or
/// restart (HAProxy users' most common complaint). It is kept until the file changes the same
/// field or the override is cleared.
#[test]
fn a_drain_set_at_run_time_survives_reload_and_restart_until_the_file_changes_it() {
    require_root!();
    let (lan, _servers, mut daemon) = setup();
    let lb = &lan.hosts[1].ns;
    let vip = format!("{VIP}:80");
    ok(&daemon.ctl(lb, &["backend", "set", &vip, "198.18.0.3", "--state", "drain"]));
    ok(&daemon.ctl(lb, &["reload"]));
    assert_eq!(backend_of(&daemon, lb, "198.18.0.3"), ("drain".to_owned(), 100), "kept over a reload");
    let listed = ok(&daemon.ctl(lb, &["overrides"]));
    assert!(listed.contains("198.18.0.3: state drain (file: active)"), "{listed}");

    daemon.proc.stop();
    daemon.restart(lb, "info");
    assert_eq!(backend_of(&daemon, lb, "198.18.0.3"), ("drain".to_owned(), 100), "kept over a restart");

    // The file changes another field of it: both apply.
    daemon.write_config(&config().replace("address = \"198.18.0.3\"", "address = \"198.18.0.3\"\nweight = 50"));
    ok(&daemon.ctl(lb, &["reload"]));
    assert_eq!(backend_of(&daemon, lb, "198.18.0.3"), ("drain".to_owned(), 50));
    // The file changes the same field: the file wins, and says so.
    daemon.write_config(&config().replace("address = \"198.18.0.3\"", "address = \"198.18.0.3\"\nstate = \"stopped\""));
    ok(&daemon.ctl(lb, &["reload"]));
    assert_eq!(backend_of(&daemon, lb, "198.18.0.3").0, "stopped");
    assert!(daemon.proc.log().contains("runtime override dropped"), "{}", daemon.proc.log());

    // Clearing puts the file's values back.
    ok(&daemon.ctl(lb, &["backend", "set", &vip, "198.18.0.4", "--weight", "7"]));
    assert_eq!(backend_of(&daemon, lb, "198.18.0.4").1, 7);
    let cleared = ok(&daemon.ctl(lb, &["overrides", "clear"]));
    assert!(cleared.contains("1 overrides cleared"), "{cleared}");
    assert_eq!(backend_of(&daemon, lb, "198.18.0.4").1, 100);
    assert!(ok(&daemon.ctl(lb, &["overrides"])).contains("no runtime overrides"));
}

#[test]
fn flow_names_the_backend_that_answered() {
    require_root!();
    let (lan, _servers, daemon) = setup();
    let lb = &lan.hosts[1].ns;
    let addr: SocketAddr = format!("{VIP}:80").parse().unwrap();
    let (local, who) = lan.hosts[0].ns.in_thread(|| {
        let mut c = HttpConn::connect(addr).expect("connect");
        (c.local_addr(), c.get().expect("request"))
    });
    let answer: serde_json::Value =
        serde_json::from_str(&ok(&daemon.ctl(lb, &["--json", "flow", &local.to_string(), &format!("{VIP}:80")])))
            .unwrap();
    let ip = if who == "be1" { "198.18.0.3" } else { "198.18.0.4" };
    assert_eq!(answer["pinned_backend"], ip, "{answer}");
    assert_eq!(answer["table_backend"], ip, "{answer}");
    let status: serde_json::Value = serde_json::from_str(&ok(&daemon.ctl(lb, &["--json", "status"]))).unwrap();
    let flows: Vec<(String, u64)> = status["vips"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["address"].as_str().unwrap().to_owned(), b["flows"].as_u64().expect("flow count")))
        .collect();
    assert_eq!(flows.iter().map(|f| f.1).sum::<u64>(), 1, "one connection, one flow entry: {flows:?}");
    assert!(flows.contains(&(ip.to_owned(), 1)), "{flows:?}");
}

#[test]
fn the_control_socket_refuses_a_non_root_user() {
    require_root!();
    let (lan, _servers, daemon) = setup();
    let lb = &lan.hosts[1].ns;
    let bin = balancer_tests::daemon::balancer_bin();
    let out = lb.output(&[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
        bin.to_str().unwrap(),
        "--socket",
        daemon.socket.to_str().unwrap(),
        "status",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("permission denied") && err.contains("root"), "{err}");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&daemon.socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn metrics_are_served_with_counters_and_health() {
    require_root!();
    let (lan, _servers, _daemon) = setup();
    spread(&lan.hosts[0].ns, 10);
    let lb = &lan.hosts[1].ns;
    let body = lb.run(&["curl", "-sf", "--max-time", "3", "http://127.0.0.1:9090/metrics"]);
    assert!(body.contains(&format!("balancer_vip_new_flows_total{{vip=\"{VIP}:80\",protocol=\"tcp\"}} 10")), "{body}");
    assert!(body.contains("balancer_backend_up{") && body.contains("balancer_backend_ring_share_ratio{"), "{body}");
}
