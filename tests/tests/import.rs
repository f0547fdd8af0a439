//! `balancer import` on the configurations of the seed documents (as files under
//! `tests/fixtures/import`) and larger realistic ones: the TOML it writes passes `balancer
//! check`, every value names its source line, every directive without an equivalent is on
//! standard error, and the exit status tells a clean import from one with notes. Then an
//! imported `mod_jk` site serves sessions from real Tomcats over AJP, and an imported httpd
//! site from Tomcats over HTTP.

use std::{path::PathBuf, process::Output};

use balancer_tests::{
    backend::JavaServer,
    daemon::{Daemon, balancer_bin},
    l7::{Browser, VIP, sessions_stay, vip_on_lb},
    netns::{Lan, Netns},
    require_root,
};

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/import").join(name).display().to_string()
}

fn import(args: &[&str]) -> (Output, String, String) {
    let out =
        std::process::Command::new(balancer_bin()).arg("import").args(args).output().expect("run balancer import");
    let toml = String::from_utf8_lossy(&out.stdout).into_owned();
    let notes = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, toml, notes)
}

/// Every `key = value` line of `toml` names where it came from (a `file:line`, or why).
fn every_value_has_a_source(toml: &str) {
    for line in toml.lines().filter(|l| l.contains(" = ") && !l.starts_with('#') && !l.ends_with('[')) {
        assert!(line.contains("   # "), "a value without its source: {line}");
    }
    for line in toml.lines().filter(|l| l.starts_with("  \"")) {
        assert!(line.contains("   # "), "a list item without its source: {line}");
    }
}

/// `balancer check` of `toml` inside `ns` (where `eth0` exists).
fn check(ns: &Netns, toml: &str, name: &str) -> Output {
    let path = std::env::temp_dir().join(format!("{}-{name}.toml", ns.name()));
    std::fs::write(&path, toml).unwrap();
    let out = ns.output(&[balancer_bin().to_str().unwrap(), "check", "-c", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    out
}

/// One import: its name, its arguments, values its TOML holds, notes its standard error holds.
type Case = (&'static str, Vec<String>, Vec<&'static str>, Vec<&'static str>);

#[test]
fn the_seed_configurations_import_with_every_value_traced_and_every_gap_noted() {
    require_root!();
    let lan = Lan::new(&["imp"]);
    let ns = &lan.hosts[0].ns;
    // `balancer check` binds an L7 VIP's address, as the daemon would.
    ns.run(&["ip", "addr", "add", "198.51.100.10/32", "dev", "lo"]);
    let vip = ["--vip", "198.51.100.10:80"];
    // (name, arguments, values the TOML holds, notes on standard error)
    let cases: Vec<Case> = vec![
        (
            "seed001",
            vec![
                "mod_jk".into(),
                fixture("seed001-workers.properties"),
                "--mounts".into(),
                fixture("seed001-mod_jk.conf"),
            ],
            vec!["path = [", "\"/*.*\"", "backend_protocol = \"ajp13\"", "route = \"tomcat-6.0.26-1\"", "port = 9009"],
            vec!["JkWorkersFile", "`tomcat-6.0.26-1` has no mount"],
        ),
        (
            "seed002",
            vec![
                "mod_jk".into(),
                fixture("seed002-workers.properties"),
                "--mounts".into(),
                fixture("seed002-uriworkermap.properties"),
            ],
            vec!["state = \"drain\"", "redirect = \"worker2\"", "worker.worker2.activation=disabled"],
            vec!["jk status worker", "myhost1", "does not pass `balancer check`"],
        ),
        (
            "seed004-jk",
            vec![
                "mod_jk".into(),
                fixture("seed004-workers.properties"),
                "--mounts".into(),
                fixture("seed004-mod_jk.conf"),
            ],
            vec!["route = \"TomcatA\"", "address = \"172.16.31.51\"", "sticky = \"route-suffix\""],
            vec!["`StatA` is a jk status worker", "JkLogLevel"],
        ),
        (
            "shop-jk",
            vec![
                "mod_jk".into(),
                fixture("shop-workers.properties"),
                "--mounts".into(),
                fixture("shop-uriworkermap.properties"),
            ],
            vec![
                "lbmethod = \"bybusyness\"",
                "max_attempts = 3",
                "ajp_secret = \"Ghostcat-no-more\"",
                "kind = \"ajp-cping\"",
                "\"/static/*\"",
                "\"=/office\"",
                "distance = 1",
                "state = \"stopped\"",
                "domain = \"dc2\"",
            ],
            vec!["worker.maintain", "socket_keepalive", "connection_pool_timeout", "`template` is neither listed"],
        ),
        (
            "seed000",
            vec!["httpd".into(), fixture("seed000-httpd.conf")],
            vec![
                "\"/server-status\"",
                "\"/balancer-manager\"",
                "route = \"jetty-8877\"",
                "session_cookies = [\"JSESSIONID\"]",
            ],
            vec!["LoadModule ×3"],
        ),
        (
            "seed003",
            vec!["httpd".into(), fixture("seed003-httpd.conf")],
            vec!["\"/cart\"", "nofailover = true", "backend_protocol = \"ajp13\"", "sticky = \"hash\""],
            vec!["no ProxyPass of /", "balanced each request"],
        ),
        (
            "seed004-httpd",
            vec!["httpd".into(), fixture("seed004-httpd.conf")],
            vec!["\"/lbmanager\"", "route = \"TomcatB\"", "preserve_host = false"],
            vec!["balancer-manager: the status page"],
        ),
        (
            "seed004-nginx",
            vec!["nginx".into(), fixture("seed004-nginx.conf")],
            vec!["hash_on = \"client\"", "ip_hash", "port = 8080"],
            vec!["included files are not read", "location = /50x.html", "sendfile ×1"],
        ),
        (
            "shop-nginx",
            vec!["nginx".into(), fixture("shop-nginx.conf")],
            vec![
                "hash_on = \"cookie:jsessionid\"",
                "hash_on = \"header:x-user-id\"",
                "rewrite = \"/\"",
                "\"api.shop.example\"",
                "backup = true",
                "state = \"stopped\"",
                "retry_s = 20",
                "max = 200",
                "preserve_host = true",
            ],
            vec!["max_fails=2", "keepalive 32", "location ~", "least_conn"],
        ),
    ];
    for (name, args, values, notes) in cases {
        let mut argv: Vec<&str> = args.iter().map(String::as_str).collect();
        argv.extend_from_slice(&vip);
        let (out, toml, stderr) = import(&argv);
        assert_eq!(out.status.code(), Some(3), "{name}: notes were written, so exit 3:\n{stderr}");
        every_value_has_a_source(&toml);
        for v in values {
            assert!(toml.contains(v), "{name}: `{v}` in\n{toml}");
        }
        for n in notes {
            assert!(stderr.contains(n), "{name}: a note about `{n}` in\n{stderr}");
        }
        let checked = check(ns, &toml, name);
        if name == "seed002" {
            let err = String::from_utf8_lossy(&checked.stderr);
            assert!(err.contains("myhost1") && err.contains("does not resolve"), "{err}");
        } else {
            assert!(
                checked.status.success(),
                "{name}: balancer check:\n{}\n{toml}",
                String::from_utf8_lossy(&checked.stderr)
            );
        }
    }
    // A source with nothing left out imports cleanly: exit 0, nothing on standard error but
    // the summary.
    let dir = std::env::temp_dir().join("import-clean");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("w.properties"), "worker.list=lb\nworker.lb.type=lb\nworker.lb.balance_workers=a\nworker.a.host=127.0.0.1\nworker.a.port=8009\nworker.a.lbfactor=1\n").unwrap();
    std::fs::write(dir.join("m.properties"), "/*=lb\n").unwrap();
    let (out, _, stderr) = import(&[
        "mod_jk",
        dir.join("w.properties").to_str().unwrap(),
        "--mounts",
        dir.join("m.properties").to_str().unwrap(),
        "--vip",
        "198.51.100.10:80",
    ]);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("note:"), "{stderr}");
    // Not importable at all: exit 78 (a configuration error) with the reason.
    std::fs::write(dir.join("none.properties"), "worker.list=st\nworker.st.type=status\n").unwrap();
    let (out, _, stderr) = import(&["mod_jk", dir.join("none.properties").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("names no lb or ajp13 worker"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// client, lb, tc1, tc2 with the VIP on lb; the daemon runs `toml`.
fn serve_imported(lan: &Lan, toml: &str) -> Daemon {
    vip_on_lb(lan);
    Daemon::start(&lan.hosts[1].ns, toml, "info")
}

#[test]
fn an_imported_mod_jk_site_keeps_sessions_on_real_tomcats_over_ajp() {
    require_root!();
    let lan = Lan::new(&["client", "lb", "tc1", "tc2"]);
    let _t1 = JavaServer::tomcat_ajp(&lan.hosts[2], "TomcatA", 8080, 8009, "imported-secret");
    let _t2 = JavaServer::tomcat_ajp(&lan.hosts[3], "TomcatB", 8080, 8009, "imported-secret");
    // Seed 004's workers.properties, pointed at this test's Tomcats, with the connectors' secret.
    let dir = std::env::temp_dir().join(format!("{}-jk", lan.hosts[1].ns.name()));
    std::fs::create_dir_all(&dir).unwrap();
    let workers = std::fs::read_to_string(fixture("seed004-workers.properties"))
        .unwrap()
        .replace("172.16.31.50", "198.18.0.3")
        .replace("172.16.31.51", "198.18.0.4")
        + "worker.tcsrvs.secret=imported-secret\n";
    std::fs::write(dir.join("workers.properties"), workers).unwrap();
    let w = dir.join("workers.properties");
    let (out, toml, stderr) = import(&[
        "mod_jk",
        w.to_str().unwrap(),
        "--mounts",
        &fixture("seed004-mod_jk.conf"),
        "--vip",
        &format!("{VIP}:80"),
    ]);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let _daemon = serve_imported(&lan, &toml);
    let client = &lan.hosts[0].ns;
    let seen = sessions_stay(client, "jk", 4, 4);
    assert_eq!(seen, ["TomcatA".to_owned(), "TomcatB".to_owned()].into());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_imported_httpd_site_excludes_its_manager_path_and_keeps_sessions_on_tomcats() {
    require_root!();
    let lan = Lan::new(&["client", "lb", "tc1", "tc2"]);
    let _t1 = JavaServer::tomcat(&lan.hosts[2], "TomcatA", 8080);
    let _t2 = JavaServer::tomcat(&lan.hosts[3], "TomcatB", 8080);
    let dir = std::env::temp_dir().join(format!("{}-httpd", lan.hosts[1].ns.name()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = std::fs::read_to_string(fixture("seed004-httpd.conf"))
        .unwrap()
        .replace("172.16.31.50", "198.18.0.3")
        .replace("172.16.31.51", "198.18.0.4");
    std::fs::write(dir.join("httpd.conf"), conf).unwrap();
    let (_, toml, _) = import(&["httpd", dir.join("httpd.conf").to_str().unwrap(), "--vip", &format!("{VIP}:80")]);
    let _daemon = serve_imported(&lan, &toml);
    let client = &lan.hosts[0].ns;
    let b = Browser::new(client, "httpd");
    let first = b.who("/");
    assert!(first == "TomcatA" || first == "TomcatB", "{first}");
    for _ in 0..4 {
        assert_eq!(b.who("/"), first);
    }
    let (status, _, body) = b.get("/lbmanager", &[]);
    assert_eq!(status, 404, "ProxyPass /lbmanager ! : not proxied: {body}");
    assert!(body.contains("nothing is served at this path"), "{body}");
    let _ = std::fs::remove_dir_all(&dir);
}
