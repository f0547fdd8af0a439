//! Announcing VIPs by BGP through BIRD (issue 16). The client's namespace plays the ECMP
//! router: a BIRD with an eBGP session to the balancer node's BIRD, exporting what it learns to
//! its kernel, so the client reaches the VIP only by the route the node announces. The daemon
//! announces a VIP while it can serve it, withdraws it when its last backend dies, on
//! `node drain` (forwarding on meanwhile) and when it stops.

use std::time::{Duration, Instant};

use balancer_tests::{
    backend::HttpBackend,
    bird::{Bird, TIMERS},
    daemon::Daemon,
    netns::Netns,
    require_root,
};

const VIP: &str = "198.51.100.10";

/// Waits (at most 20 s) until the client's kernel route to the VIP is there (`true`) or gone.
fn route_becomes(client: &Netns, present: bool) -> Duration {
    let start = Instant::now();
    loop {
        let routes = client.run(&["ip", "route", "show", &format!("{VIP}/32")]);
        if routes.contains("proto bird") == present {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the route did not {} in 20 s: {routes:?}",
            if present { "appear" } else { "go" }
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_node_announces_what_it_can_serve_and_withdraws_on_failure_drain_and_stop() {
    require_root!();
    let mut lan = balancer_tests::netns::Lan::new(&["router", "lb", "be1"]);
    let dir = std::env::temp_dir().join(format!("bt-announce-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (f4, f6) = (dir.join("vips4.conf"), dir.join("vips6.conf"));
    for f in [&f4, &f6] {
        std::fs::write(f, "# empty until the daemon writes it\n").unwrap();
    }
    let server = HttpBackend::start(&lan.hosts[2], "be1", VIP.parse().unwrap(), 80);
    lan.accept_xdp_frames_from(1);
    let (router, lb) = (&lan.hosts[0].ns, &lan.hosts[1].ns);
    let _router_bird = Bird::start(
        router,
        &dir,
        "router",
        &format!(
            "router id 198.18.0.1;\nprotocol device {{ scan time 1; }}\n\
             protocol kernel {{ ipv4 {{ import none; export all; }}; merge paths on; }}\n\
             protocol bgp to_node {{ local 198.18.0.1 as 65000; neighbor 198.18.0.2 as 65001; {TIMERS}\n\
             ipv4 {{ import all; export none; }}; }}\n"
        ),
    );
    // The node's side, as `balancer bgp config` prints it, plus the session.
    let announce = format!(
        "[announce]\nfile_v4 = \"{}\"\nfile_v6 = \"{}\"\nbird_socket = \"{}\"\n",
        f4.display(),
        f6.display(),
        dir.join("node.ctl").display()
    );
    let config = format!(
        "interfaces = [\"eth0\"]\n{announce}[[vip]]\naddress = \"{VIP}:80\"\n\
         [vip.health]\nkind = \"tcp\"\ninterval_ms = 200\nrise = 1\nfall = 1\n\
         [[vip.backend]]\naddress = \"198.18.0.3\"\n"
    );
    let printed = lb.run(&[balancer_tests::daemon::balancer_bin().to_str().unwrap(), "bgp", "config", "-c", &{
        let p = dir.join("for-bgp-config.toml");
        std::fs::write(&p, &config).unwrap();
        p.display().to_string()
    }]);
    assert!(printed.contains(&format!("include \"{}\";", f4.display())), "{printed}");
    let node_conf = format!(
        "router id 198.18.0.2;\nprotocol device {{ scan time 1; }}\n{}\
         protocol bgp to_router {{ local 198.18.0.2 as 65001; neighbor 198.18.0.1 as 65000; {TIMERS}\n\
         ipv4 {{ import none; export where proto = \"balancer_vips4\"; }}; }}\n",
        printed.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n") + "\n"
    );
    let _node_bird = Bird::start(lb, &dir, "node", &node_conf);
    let mut daemon = Daemon::start(lb, &config, "info");
    let get = || router.http_status(&format!("http://{VIP}/"));
    let status =
        |d: &Daemon| -> serde_json::Value { serde_json::from_slice(&d.ctl(lb, &["--json", "status"]).stdout).unwrap() };
    // `announced` is what BIRD confirmed: the daemon collects `birdc configure`'s answer on its
    // loop's next turn, which may come a little after the router already has the change.
    let announced_becomes = |d: &Daemon, want: bool| {
        let start = Instant::now();
        while status(d)["vips"][0]["announced"] != want {
            assert!(start.elapsed() < Duration::from_secs(2), "status still says announced = {}", !want);
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    let took = route_becomes(router, true);
    eprintln!("announced: route in the router's table after {took:?}");
    assert_eq!(get(), "200", "served through the announced route");
    announced_becomes(&daemon, true);
    assert!(status(&daemon)["vips"][0]["table_digest"].as_str().is_some_and(|d| d.len() == 16));

    // The only backend dies: nothing to serve, withdrawn; back: announced again.
    drop(server);
    let took = route_becomes(router, false);
    eprintln!("backend down: route gone after {took:?}");
    announced_becomes(&daemon, false);
    let _server = HttpBackend::start(&lan.hosts[2], "be1", VIP.parse().unwrap(), 80);
    route_becomes(router, true);

    // Drain: withdrawn while the data path forwards on (a connection that still arrives, here
    // by a static route, is served); resume announces again.
    let drained = daemon.ctl(lb, &["node", "drain"]);
    assert!(drained.status.success(), "{}", String::from_utf8_lossy(&drained.stderr));
    let took = route_becomes(router, false);
    eprintln!("drain: route gone after {took:?}");
    assert_eq!(status(&daemon)["daemon"]["drained"], true);
    router.run(&["ip", "route", "add", &format!("{VIP}/32"), "via", "198.18.0.2", "metric", "500"]);
    assert_eq!(get(), "200", "a drained node still forwards");
    router.run(&["ip", "route", "del", &format!("{VIP}/32"), "via", "198.18.0.2", "metric", "500"]);
    // A drained node that is restarted (an upgrade during maintenance) stays drained.
    daemon.proc.stop();
    daemon.restart(lb, "info");
    assert_eq!(status(&daemon)["daemon"]["drained"], true, "the restarted node forgot its drain");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !router.run(&["ip", "route", "show", &format!("{VIP}/32")]).contains("proto bird"),
        "the restarted node announced while drained"
    );
    assert!(daemon.ctl(lb, &["node", "resume"]).status.success());
    route_becomes(router, true);

    // A planned stop withdraws first.
    drop(daemon);
    let took = route_becomes(router, false);
    eprintln!("stop: route gone after {took:?}");
    assert!(std::fs::read_to_string(&f4).unwrap().lines().all(|l| !l.starts_with("route")));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A BIRD that is slow to answer (here a `birdc` that takes 3 s) used to hold the daemon's
/// loop for as long: a `backend set` that withdrew the VIP, and every control request behind
/// it, waited for BIRD. `birdc configure` now runs beside the loop.
#[test]
fn a_slow_bird_does_not_hold_the_daemons_requests() {
    require_root!();
    let lan = balancer_tests::netns::Lan::new(&["lb", "be1"]);
    let lb = &lan.hosts[0].ns;
    let dir = std::env::temp_dir().join(format!("bt-slow-bird-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let birdc = dir.join("birdc");
    let calls = dir.join("calls");
    std::fs::write(&birdc, format!("#!/bin/sh\necho \"$@\" >> {}\nsleep 3\necho Reconfigured\n", calls.display()))
        .unwrap();
    std::fs::set_permissions(&birdc, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = format!(
        "interfaces = [\"eth0\"]\n[announce]\nfile_v4 = \"{d}/v4.conf\"\nfile_v6 = \"{d}/v6.conf\"\n\
         bird_socket = \"{d}/bird.ctl\"\nbirdc = \"{}\"\n[[vip]]\naddress = \"{VIP}:80\"\n\
         [[vip.backend]]\naddress = \"198.18.0.2\"\n",
        birdc.display(),
        d = dir.display()
    );
    let daemon = Daemon::start(lb, &config, "info");
    let routes = || std::fs::read_to_string(dir.join("v4.conf")).unwrap_or_default();
    let start = Instant::now();
    while !routes().contains(VIP) {
        assert!(start.elapsed() < Duration::from_secs(10), "never announced: {}", routes());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Stopping the only backend withdraws the VIP: the request returns at once, and so does
    // the next one, while birdc still runs.
    let asked = Instant::now();
    let out = daemon.ctl(lb, &["backend", "set", &format!("{VIP}:80"), "198.18.0.2", "--state", "stopped"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let set_took = asked.elapsed();
    let asked = Instant::now();
    assert!(daemon.ctl(lb, &["status"]).status.success());
    let status_took = asked.elapsed();
    eprintln!("backend set answered in {set_took:?}, status in {status_took:?}, with birdc taking 3 s");
    assert!(set_took < Duration::from_millis(1500), "backend set waited for BIRD: {set_took:?}");
    assert!(status_took < Duration::from_millis(1500), "status waited for BIRD: {status_took:?}");
    assert!(!routes().contains(VIP), "withdrawn from the file at once");
    let _ = std::fs::remove_dir_all(&dir);
}
