//! Several pools on one L7 address, chosen by path and host: a default pool of application
//! servers, JSPs and the cart on a real Tomcat (as `JkMount /*.jsp` and `/cart` write it, with
//! a `JkUnMount`), a name-based virtual host, and a prefix whose path is rewritten for Tomcat
//! and mapped back on its `Location` and `Set-Cookie` (`ProxyPass` / `ProxyPassReverse`).

use balancer_tests::{
    backend::{AppServer, JavaServer},
    daemon::Daemon,
    l7::{VIP, vip_on_lb},
    netns::{Lan, Netns},
    require_root,
};

/// `curl` in `ns` with `extra` arguments; (status, head, body).
fn get(ns: &Netns, url: &str, extra: &[&str]) -> (u16, String, String) {
    let mut argv = vec!["curl", "-s", "--max-time", "5", "-D", "-"];
    argv.extend_from_slice(extra);
    argv.push(url);
    let out = ns.output(&argv);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

#[test]
fn path_and_host_pick_the_pool_exclusions_fall_through_and_rewrites_are_mapped_back() {
    require_root!();
    let lan = Lan::new(&["client", "lb", "web", "api", "tc1"]);
    let _web = AppServer::start(&lan.hosts[2], "web", "-", 8080);
    let _api = AppServer::start(&lan.hosts[3], "api", "-", 8080);
    let _tomcat = JavaServer::tomcat(&lan.hosts[4], "t1", 8080);
    vip_on_lb(&lan);
    let log = std::env::temp_dir().join(format!("{}-access.log", lan.hosts[1].ns.name()));
    let _ = std::fs::remove_file(&log);
    let entry = |name: &str, matches: &str, sticky: &str, backend: &str| {
        format!(
            "[[vip]]\naddress = \"{VIP}:80\"\nname = \"{name}\"\n{matches}[vip.l7]\nsticky = \"{sticky}\"\n\
             [[vip.backend]]\naddress = \"{backend}\"\nport = 8080\nroute = \"t1\"\n"
        )
    };
    let config = format!(
        "interfaces = [\"eth0\"]\n[access_log]\npath = \"{}\"\nformat = \"json\"\n{}{}{}{}",
        log.display(),
        entry("web", "", "hash", "198.18.0.3"),
        entry(
            "java",
            "[vip.match]\npath = [\"/*.jsp\", \"/cart\"]\nexclude = [\"/cart/static\"]\n",
            "route-suffix",
            "198.18.0.5"
        ),
        entry("api", "[vip.match]\nhost = [\"api.example\"]\n", "hash", "198.18.0.4"),
        entry("app", "[vip.match]\npath = [\"/app/\"]\nrewrite = \"/\"\n", "route-suffix", "198.18.0.5"),
    );
    let daemon = Daemon::start(&lan.hosts[1].ns, &config, "info");
    let client = &lan.hosts[0].ns;
    let url = |path: &str| format!("http://{VIP}{path}");
    let who = |path: &str, extra: &[&str]| {
        let (status, head, body) = get(client, &url(path), extra);
        assert_eq!(status, 200, "{path}: {head}{body}");
        body.split_whitespace().next().unwrap_or("").to_owned()
    };

    // By path: the default pool, JSPs anywhere and the cart on Tomcat, the excluded part of
    // the cart back on the default; by host, whatever the path.
    assert_eq!(who("/index.html", &[]), "web");
    assert_eq!(who("/sub/index.jsp", &[]), "t1");
    let (status, _, body) = get(client, &url("/cart"), &[]);
    assert!(status == 404 && body.contains("Apache Tomcat"), "the cart is Tomcat's, which has none: {status} {body}");
    assert_eq!(who("/cart/static/logo.css", &[]), "web", "excluded from the Tomcat pool");
    assert_eq!(who("/index.jsp", &["-H", "Host: api.example"]), "api", "a named host beats a path pattern");
    assert_eq!(who("/index.jsp", &["-H", "Host: API.example:80"]), "api");
    // HTTP/2 with prior knowledge routes the same way.
    assert_eq!(who("/sub/index.jsp", &["--http2-prior-knowledge"]), "t1");

    // A path walking out of its prefix is refused, never matched against another entry.
    let (status, _, _) = get(client, &url("/app/../cart/static/x"), &["--path-as-is"]);
    assert_eq!(status, 400);

    // `/app/` is Tomcat's `/`: the request path loses the prefix, the session cookie's path
    // and a redirect's Location get it back.
    let (status, head, body) = get(client, &url("/app/echo.jsp?q=1"), &[]);
    assert_eq!(status, 200, "{head}{body}");
    assert!(body.contains("uri=/echo.jsp ") && body.contains("query=q=1"), "{body}");
    let (status, head, body) = get(client, &url("/app/index.jsp"), &[]);
    assert_eq!(status, 200, "{head}{body}");
    let cookie = head.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:")).unwrap_or_default();
    assert!(cookie.contains("JSESSIONID=") && cookie.contains("Path=/app/"), "{head}");
    let (status, head, _) = get(client, &url("/app/sub"), &[]);
    assert_eq!(status, 302, "{head}");
    let location = head.lines().find(|l| l.to_ascii_lowercase().starts_with("location:")).unwrap_or_default();
    assert!(location.trim_end().ends_with("/app/sub/"), "{head}");

    // The access log and the status name the entry that served each request.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let lines = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        lines.lines().any(|l| l.contains("\"path\":\"/sub/index.jsp\"") && l.contains("\"pool\":\"java\"")),
        "{lines}"
    );
    assert!(lines.lines().any(|l| l.contains("\"pool\":\"api\"")), "{lines}");
    let status = daemon.ctl(&lan.hosts[1].ns, &["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    for name in ["web", "java", "api", "app"] {
        assert!(text.contains(name), "status names `{name}`: {text}");
    }
    let _ = std::fs::remove_file(&log);
}

#[test]
fn without_a_default_entry_an_unrouted_path_gets_404_from_the_proxy() {
    require_root!();
    let lan = Lan::new(&["client", "lb", "web"]);
    let _web = AppServer::start(&lan.hosts[2], "web", "-", 8080);
    vip_on_lb(&lan);
    let config = format!(
        "interfaces = [\"eth0\"]\n[[vip]]\naddress = \"{VIP}:80\"\nname = \"shop\"\n[vip.match]\npath = [\"/shop\"]\n\
         exclude = [\"/shop/admin\"]\n[vip.l7]\nsticky = \"hash\"\n[[vip.backend]]\naddress = \"198.18.0.3\"\nport = 8080\n"
    );
    let _daemon = Daemon::start(&lan.hosts[1].ns, &config, "info");
    let client = &lan.hosts[0].ns;
    let (status, _, body) = get(client, &format!("http://{VIP}/shop/cart"), &[]);
    assert_eq!((status, body.split_whitespace().next()), (200, Some("web")));
    for path in ["/other", "/shop/admin/users", "/shopping"] {
        let (status, head, body) = get(client, &format!("http://{VIP}{path}"), &[]);
        assert_eq!(status, 404, "{path}: {head}{body}");
        assert!(body.contains("nothing is served at this path"), "{body}");
    }
}
