//! Health checks end to end: a backend whose server dies leaves the table within
//! `fall × interval + 100 ms` and its traffic moves; it comes back after `rise` good checks;
//! a backup only takes traffic when every primary is down.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use balancer_tests::{
    backend::{HttpBackend, HttpConn},
    daemon::Daemon,
    netns::{Lan, Netns},
    require_root,
};

const VIP: &str = "198.51.100.10";
const INTERVAL_MS: u64 = 300;
const FALL: u64 = 2;

fn setup(backends: &str) -> (Lan, Vec<Option<HttpBackend>>, Daemon) {
    setup_with("", backends)
}

/// As `setup`, with `health_extra` added to `[vip.health]`.
fn setup_with(health_extra: &str, backends: &str) -> (Lan, Vec<Option<HttpBackend>>, Daemon) {
    let mut lan = Lan::new(&["client", "lb", "be1", "be2", "be3"]);
    let vip: IpAddr = VIP.parse().unwrap();
    let servers = (2..5).map(|h| Some(HttpBackend::start(&lan.hosts[h], &format!("be{}", h - 1), vip, 80))).collect();
    lan.hosts[0].ns.run(&["ip", "route", "add", &format!("{VIP}/32"), "via", "198.18.0.2"]);
    lan.accept_xdp_frames_from(1);
    let config = format!(
        "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"{VIP}:80\"\n[vip.health]\nkind = \"http\"\n\
         interval_ms = {INTERVAL_MS}\ntimeout_ms = 200\nrise = 2\nfall = {FALL}\n{health_extra}\n{backends}"
    );
    let daemon = Daemon::start(&lan.hosts[1].ns, &config, "info");
    (lan, servers, daemon)
}

/// Who answers `n` new connections (failures counted as "failed").
fn spread(client: &Netns, n: usize) -> HashMap<String, usize> {
    let addr: SocketAddr = format!("{VIP}:80").parse().unwrap();
    client.in_thread(|| {
        let mut m = HashMap::new();
        for _ in 0..n {
            let who = HttpConn::connect(addr).and_then(|mut c| c.get()).unwrap_or_else(|_| "failed".into());
            *m.entry(who).or_default() += 1;
        }
        m
    })
}

/// Opens new connections until `streak` in a row succeed; returns when the first of them was
/// opened (bounded: 20 s).
fn until_all_succeed(client: &Netns, streak: usize) -> Instant {
    let addr: SocketAddr = format!("{VIP}:80").parse().unwrap();
    client.in_thread(|| {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut first_ok: Option<Instant> = None;
        let mut run = 0;
        while Instant::now() < deadline {
            let t = Instant::now();
            if HttpConn::connect(addr).and_then(|mut c| c.get()).is_ok() {
                first_ok.get_or_insert(t);
                run += 1;
                if run == streak {
                    return first_ok.unwrap();
                }
            } else {
                first_ok = None;
                run = 0;
            }
        }
        panic!("new connections kept failing for 20 s");
    })
}

const TWO: &str = "[[vip.backend]]\naddress = \"198.18.0.3\"\n[[vip.backend]]\naddress = \"198.18.0.4\"\n";

#[test]
fn a_dead_backend_leaves_the_table_within_fall_times_interval_plus_100ms_and_comes_back() {
    require_root!();
    let (lan, mut servers, mut daemon) = setup(TWO);
    let client = &lan.hosts[0].ns;
    let before = spread(client, 60);
    assert!(before.contains_key("be1") && before.contains_key("be2"), "{before:?}");

    let killed = Instant::now();
    servers[1] = None; // be2's server stops: its port refuses connections
    let recovered = until_all_succeed(client, 40);
    let took = recovered.duration_since(killed);
    let bound = Duration::from_millis(FALL * INTERVAL_MS + 100);
    eprintln!("be2 out of the table {took:?} after its server died (bound {bound:?})");
    assert!(took <= bound, "took {took:?}, bound {bound:?}");
    daemon.proc.wait_for_log("backend down", Duration::from_secs(1));
    let during = spread(client, 60);
    assert_eq!(during.get("be1"), Some(&60), "all traffic on be1: {during:?}");

    servers[1] = Some(HttpBackend::start(&lan.hosts[3], "be2", VIP.parse().unwrap(), 80));
    daemon.proc.wait_for_log("cause=\"backend up\"", Duration::from_secs(5));
    let after = spread(client, 60);
    assert!(after.contains_key("be2") && !after.contains_key("failed"), "be2 is back: {after:?}");
}

#[test]
fn a_backup_takes_traffic_only_when_every_primary_is_down() {
    require_root!();
    let (lan, mut servers, mut daemon) =
        setup(&format!("{TWO}[[vip.backend]]\naddress = \"198.18.0.5\"\nbackup = true\n"));
    let client = &lan.hosts[0].ns;
    let normal = spread(client, 60);
    assert!(!normal.contains_key("be3") && !normal.contains_key("failed"), "primaries only: {normal:?}");

    servers[0] = None;
    daemon.proc.wait_for_log("backend down", Duration::from_secs(5));
    until_all_succeed(client, 20);
    let one_left = spread(client, 60);
    assert_eq!(one_left.get("be2"), Some(&60), "one primary left still takes everything: {one_left:?}");

    servers[1] = None;
    until_all_succeed(client, 20);
    let backup = spread(client, 60);
    assert_eq!(backup.get("be3"), Some(&60), "the backup takes over: {backup:?}");

    servers[0] = Some(HttpBackend::start(&lan.hosts[2], "be1", VIP.parse().unwrap(), 80));
    daemon.proc.wait_for_log("cause=\"backend up\"", Duration::from_secs(5));
    let back = spread(client, 60);
    assert_eq!(
        back.get("be1"),
        Some(&60),
        "a primary is back: new connections leave the backup: {back:?}\n{}",
        daemon.proc.log()
    );
}

/// be2's share of the ring, in percent, from `balancer status --json`.
fn share_of_be2(lan: &Lan, daemon: &Daemon) -> f64 {
    let out = daemon.ctl(&lan.hosts[1].ns, &["--json", "status"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    v["vips"][0]["backends"][1]["share"].as_f64().expect("share")
}

#[test]
#[expect(clippy::float_cmp, reason = "a share of exactly no slots")]
fn a_backend_back_from_down_ramps_up_over_its_slow_start() {
    require_root!();
    let (lan, mut servers, mut daemon) = setup_with("slowstart_s = 3", TWO);
    servers[1] = None;
    daemon.proc.wait_for_log("backend down", Duration::from_secs(5));
    assert_eq!(share_of_be2(&lan, &daemon), 0.0);
    servers[1] = Some(HttpBackend::start(&lan.hosts[3], "be2", VIP.parse().unwrap(), 80));
    daemon.proc.wait_for_log("slow start", Duration::from_secs(5));
    let early = share_of_be2(&lan, &daemon);
    assert!(early > 0.0 && early < 30.0, "a token share at first: {early}%");
    daemon.proc.wait_for_log("slow start done", Duration::from_secs(6));
    std::thread::sleep(Duration::from_millis(200));
    let full = share_of_be2(&lan, &daemon);
    assert!((full - 50.0).abs() < 1.0, "its full weight after the ramp: {full}%");
}

/// The health of backend `i` of the first VIP, from `balancer status --json`.
fn health_of(lan: &Lan, daemon: &Daemon, lb: usize, i: usize) -> String {
    let out = daemon.ctl(&lan.hosts[lb].ns, &["--json", "status"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    v["vips"][0]["backends"][i]["health"].as_str().expect("health").to_owned()
}

/// Polls `health_of` until it is `want` (bounded: 5 s), the daemon in host 0.
fn until_health(lan: &Lan, daemon: &Daemon, i: usize, want: &str) {
    until_health_at(lan, daemon, 0, i, want);
}

/// As `until_health`, the daemon in host `lb`.
fn until_health_at(lan: &Lan, daemon: &Daemon, lb: usize, i: usize, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while health_of(lan, daemon, lb, i) != want {
        assert!(Instant::now() < deadline, "backend {i} never became {want}: {}", daemon.proc.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Issue 14: a `tunnel` check sends its SYN to the VIP inside the backend's IPIP tunnel, so a
/// backend that lost the VIP from its loopback, or its decap program, is taken out, where a
/// check of its own address (which it still answers) keeps it in.
#[test]
fn a_tunnel_check_takes_out_a_backend_that_lost_its_vip_or_its_decap() {
    require_root!();
    let mut lan = Lan::new(&["lb", "be1", "be2"]);
    let vip: IpAddr = VIP.parse().unwrap();
    let _servers: Vec<HttpBackend> =
        (1..3).map(|h| HttpBackend::start(&lan.hosts[h], &format!("be{h}"), vip, 80)).collect();
    lan.decap_on(1);
    lan.decap_on(2);
    lan.accept_xdp_frames_from(0);
    // be1 is checked at its own address (tcp), be2 through the tunnel.
    let check = |kind: &str| {
        format!("[vip.backend.health]\nkind = \"{kind}\"\ninterval_ms = 200\ntimeout_ms = 150\nrise = 1\nfall = 1\n")
    };
    let config = format!(
        "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"{VIP}:80\"\nforwarding = \"ipip\"\n\
         [[vip.backend]]\naddress = \"198.18.0.2\"\n{}[[vip.backend]]\naddress = \"198.18.0.3\"\n{}",
        check("tcp"),
        check("tunnel")
    );
    let daemon = Daemon::start(&lan.hosts[0].ns, &config, "info");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!((health_of(&lan, &daemon, 0, 0), health_of(&lan, &daemon, 0, 1)), ("up".into(), "up".into()));

    // Both lose the VIP; their own addresses still answer on port 80.
    for h in [1, 2] {
        lan.hosts[h].ns.run(&["ip", "addr", "del", &format!("{VIP}/32"), "dev", "lo"]);
    }
    until_health(&lan, &daemon, 1, "down");
    assert!(daemon.proc.log().contains("through the tunnel"), "the log says why: {}", daemon.proc.log());
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(health_of(&lan, &daemon, 0, 0), "up", "the tcp check does not see it");

    // The VIP back: up again. Then be2 loses its decap program: down.
    for h in [1, 2] {
        lan.hosts[h].ns.run(&["ip", "addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
    }
    until_health(&lan, &daemon, 1, "up");
    lan.decap_off(2);
    until_health(&lan, &daemon, 1, "down");
}

/// Found in issue 14's work: a reload that changed the check of a backend the old check had
/// taken down started the new check from "up", so when the new check passed there was no flip
/// and the daemon kept the backend down for good. The new check now goes on from down, and the
/// backend comes back after `rise` passes.
#[test]
fn a_backend_taken_down_by_a_check_a_reload_fixes_comes_back() {
    require_root!();
    let mut lan = Lan::new(&["client", "lb", "be1", "be2"]);
    let vip: IpAddr = VIP.parse().unwrap();
    let _servers: Vec<HttpBackend> =
        (2..4).map(|h| HttpBackend::start(&lan.hosts[h], &format!("be{}", h - 1), vip, 80)).collect();
    lan.accept_xdp_frames_from(1);
    let config = |path: &str| {
        format!(
            "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"{VIP}:80\"\n[[vip.backend]]\naddress = \"198.18.0.3\"\n\
             [[vip.backend]]\naddress = \"198.18.0.4\"\n[vip.backend.health]\nkind = \"http\"\npath = \"{path}\"\n\
             interval_ms = 200\ntimeout_ms = 150\nrise = 2\nfall = 1\n"
        )
    };
    // be2's check asks for a page it does not have: 404, down.
    let daemon = Daemon::start(&lan.hosts[1].ns, &config("/missing"), "info");
    until_health_at(&lan, &daemon, 1, 1, "down");
    daemon.write_config(&config("/"));
    let out = daemon.ctl(&lan.hosts[1].ns, &["reload"]);
    assert!(out.status.success(), "reload: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(health_of(&lan, &daemon, 1, 1), "down", "still down until the new check has passed `rise` times");
    until_health_at(&lan, &daemon, 1, 1, "up");
}
