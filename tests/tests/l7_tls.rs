//! TLS termination on an L7 VIP with real clients: curl (HTTP/1.1 and HTTP/2 by ALPN),
//! `openssl s_client` (SNI, versions, ALPN), and a client that keeps its connection across a
//! reload that changes the certificate.

use std::{fmt::Write as _, net::SocketAddr, path::Path, time::Duration};

use balancer_tests::{
    daemon::Daemon,
    l7::{Setup, VIP, setup_on},
    require_root,
    tls::{Pki, TlsClient},
};

/// The `[vip.tls]` section for certificate files `certs` (pairs of cert and key).
fn tls_section(certs: &[(&Path, &Path)], extra: &str) -> String {
    let mut s = format!("[vip.tls]\n{extra}\n");
    for (cert, key) in certs {
        let _ = write!(s, "[[vip.tls.certificate]]\ncert = \"{}\"\nkey = \"{}\"\n", cert.display(), key.display());
    }
    s
}

/// A TLS VIP on 443: shop.example (the default) and *.api.example, redirect from port 80.
fn tls_setup(pki: &Pki) -> Setup {
    setup_on(443, "sticky = \"insert\"", &tls_of(pki, None), "distance = 1")
}

/// The test VIP's `[vip.tls]`; `shop` replaces the default certificate's files.
fn tls_of(pki: &Pki, shop: Option<(&Path, &Path)>) -> String {
    let (cert, key) = (pki.dir.join("shop.pem"), pki.dir.join("shop.key"));
    if !cert.exists() {
        pki.leaf("shop", &["shop.example"], (-1, 90));
        pki.leaf("api", &["*.api.example"], (-1, 30));
    }
    let api = (pki.dir.join("api.pem"), pki.dir.join("api.key"));
    tls_section(&[shop.unwrap_or((&cert, &key)), (&api.0, &api.1)], "redirect_http = 80")
}

/// curl in the client's namespace, trusting the test CA, `name` resolved to the VIP.
fn curl(s: &Setup, pki: &Pki, name: &str, extra: &[&str], url_path: &str) -> (String, String) {
    let resolve = format!("{name}:443:{VIP}");
    let url = format!("https://{name}{url_path}");
    let ca = pki.ca_file.to_str().unwrap();
    let mut argv = vec!["curl", "-s", "--max-time", "5", "-D", "-", "--cacert", ca, "--resolve", &resolve];
    argv.extend_from_slice(extra);
    argv.push(&url);
    let out = s.lan.hosts[0].ns.output(&argv);
    assert!(out.status.success(), "curl {url}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_owned(), body.to_owned())
}

/// `openssl s_client`'s report of a handshake with `args`.
fn s_client(s: &Setup, pki: &Pki, args: &[&str]) -> String {
    let connect = format!("{VIP}:443");
    let mut argv = vec!["openssl", "s_client", "-connect", &connect, "-CAfile", pki.ca_file.to_str().unwrap()];
    argv.extend_from_slice(args);
    let mut cmd = s.lan.hosts[0].ns.command(&argv);
    cmd.stdin(std::process::Stdio::null());
    let out = cmd.output().expect("openssl runs");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn tls_serves_http1_and_http2_by_alpn_picks_certificates_by_sni_and_backends_learn_https() {
    require_root!();
    let pki = Pki::new("l7tls-a");
    let s = tls_setup(&pki);

    let (head, body) = curl(&s, &pki, "shop.example", &["--http1.1"], "/");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("proto=https"), "X-Forwarded-Proto: {body}");
    let cookie = head.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie: balancerid=")).unwrap_or("");
    assert!(cookie.contains("; Secure"), "the cookie of a TLS VIP is Secure: {head}");

    let (head, body) = curl(&s, &pki, "shop.example", &["--http2"], "/");
    assert!(head.starts_with("HTTP/2 200"), "h2 by ALPN: {head}");
    assert!(body.contains("proto=https"), "{body}");

    // SNI picks the certificate; a wildcard serves one level; no SNI gets the first one.
    let api = s_client(&s, &pki, &["-servername", "orders.api.example", "-alpn", "h2,http/1.1"]);
    assert!(api.contains("CN = *.api.example") || api.contains("CN=*.api.example"), "{api}");
    assert!(api.contains("Verify return code: 0 (ok)"), "{api}");
    assert!(api.contains("ALPN protocol: h2"), "{api}");
    let none = s_client(&s, &pki, &["-noservername"]);
    assert!(none.contains("CN = shop.example") || none.contains("CN=shop.example"), "{none}");
    let unknown = s_client(&s, &pki, &["-servername", "other.example"]);
    assert!(unknown.contains("CN = shop.example") || unknown.contains("CN=shop.example"), "{unknown}");
    for (flag, version) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let out = s_client(&s, &pki, &[flag, "-servername", "shop.example"]);
        assert!(out.contains(&format!("Protocol  : {version}")) || out.contains(&format!("New, {version}")), "{out}");
    }
    let old = s_client(&s, &pki, &["-tls1_1", "-servername", "shop.example"]);
    assert!(old.contains("no peer certificate available"), "TLS 1.1 is refused: {old}");

    // Plain HTTP on the TLS port fails the handshake; the cleartext port redirects.
    let plain = s.lan.hosts[0].ns.output(&["curl", "-s", "--max-time", "3", &format!("http://{VIP}:443/")]);
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("200"), "no HTTP on the TLS port");
    let redirect = s.lan.hosts[0].ns.output(&[
        "curl",
        "-s",
        "--max-time",
        "3",
        "-D",
        "-",
        "-H",
        "Host: shop.example",
        &format!("http://{VIP}/cart?item=7"),
    ]);
    let redirect = String::from_utf8_lossy(&redirect.stdout);
    assert!(redirect.starts_with("HTTP/1.1 301"), "{redirect}");
    assert!(redirect.contains("location: https://shop.example/cart?item=7\r\n"), "{redirect}");

    // Status and metrics count what happened, and show the certificates' expiry.
    let lb = &s.lan.hosts[1].ns;
    let out = s.daemon.ctl(lb, &["--json", "status"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --json");
    let tls = &status["vips"][0]["connections"]["tls"];
    assert!(tls["handshakes"].as_u64().unwrap() >= 6, "{tls}");
    let failures: u64 = tls["failures"].as_array().unwrap().iter().map(|f| f[1].as_u64().unwrap()).sum();
    assert!(failures >= 2, "TLS 1.1 and plain HTTP failed: {tls}");
    let not_tls = tls["failures"].as_array().unwrap().iter().find(|f| f[0] == "not_tls").unwrap();
    assert!(not_tls[1].as_u64().unwrap() >= 1, "{tls}");
    let days: Vec<i64> =
        tls["certificates"].as_array().unwrap().iter().map(|c| c["days_left"].as_i64().unwrap()).collect();
    assert_eq!(days, vec![89, 29], "{tls}");
    let metrics = lb.run(&["curl", "-s", "--max-time", "5", "http://127.0.0.1:9090/metrics"]);
    assert!(metrics.contains("balancer_tls_certificate_days_left{vip=\"198.51.100.10:443\",file="), "{metrics}");
    assert!(metrics.contains("balancer_tls_alpn_total{vip=\"198.51.100.10:443\",value=\"h2\"}"), "{metrics}");
    let text = String::from_utf8_lossy(&s.daemon.ctl(lb, &["status"]).stdout).into_owned();
    assert!(text.contains("tls: ") && text.contains("days left"), "{text}");
}

#[test]
fn a_reload_swaps_certificates_without_dropping_connections_and_a_bad_certificate_is_refused_by_name() {
    require_root!();
    let pki = Pki::new("l7tls-b");
    let s = tls_setup(&pki);
    let lb = &s.lan.hosts[1].ns;
    let vip: SocketAddr = format!("{VIP}:443").parse().unwrap();
    let ca = pki.ca_file.clone();
    let (kept, first_leaf) = s.lan.hosts[0].ns.in_thread(|| {
        let mut c = TlsClient::connect(vip, "shop.example", &ca).expect("TLS connection");
        let r = c.get("shop.example", "/").unwrap();
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        let leaf = c.peer_leaf();
        (c, leaf)
    });

    // A renewed certificate for shop.example at the same path: the reload takes it.
    let renewed = pki.leaf("shop", &["shop.example"], (-1, 365));
    assert!(renewed.0.ends_with("shop.pem"));
    let out = s.daemon.ctl(lb, &["reload"]);
    assert!(out.status.success(), "reload: {}", String::from_utf8_lossy(&out.stderr));
    let (kept, new_leaf) = s.lan.hosts[0].ns.in_thread(move || {
        let mut kept = kept;
        let r = kept.get("shop.example", "/").expect("the established connection survives the reload");
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        let fresh = TlsClient::connect(vip, "shop.example", &ca).expect("a new connection");
        (kept, fresh.peer_leaf())
    });
    assert_ne!(new_leaf, first_leaf, "new handshakes get the renewed certificate");
    assert_eq!(kept.peer_leaf(), first_leaf);

    // Bad files: each refused by `check` and by reload, naming the file and the reason, and
    // the running certificate stays.
    let other = pki.leaf("other", &["shop.example"], (-1, 90));
    let expired = pki.leaf("expired", &["shop.example"], (-30, -1));
    let open_key = pki.leaf("open", &["shop.example"], (-1, 90));
    std::fs::set_permissions(&open_key.1, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let missing = pki.dir.join("missing.pem");
    let shop = pki.dir.join("shop.pem");
    let cases: [(&Path, &Path, &str); 4] = [
        (&shop, &other.1, "the key does not fit the certificate"),
        (&expired.0, &expired.1, "not now"),
        (&open_key.0, &open_key.1, "chmod 600"),
        (&missing, &other.1, "cannot read"),
    ];
    let good = tls_of(&pki, None);
    for (cert, key, reason) in cases {
        let bad = s.config.replace(&good, &tls_of(&pki, Some((cert, key))));
        assert!(bad.contains(cert.to_str().unwrap()), "{bad}");
        s.daemon.write_config(&bad);
        let out = Daemon::cli(lb, &["check", "--config", s.daemon.config.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "check accepted {}", cert.display());
        let named = if reason == "chmod 600" || reason.starts_with("the key") { key } else { cert };
        assert!(err.contains(named.to_str().unwrap()) && err.contains(reason), "{reason}: {err}");
        let out = s.daemon.ctl(lb, &["reload"]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success() && err.contains(reason), "reload: {err}");
    }
    let still = s.lan.hosts[0]
        .ns
        .in_thread(move || TlsClient::connect(vip, "shop.example", &pki.ca_file).expect("still serving").peer_leaf());
    assert_eq!(still, new_leaf, "the running certificate stays");
}

#[test]
fn chromium_loads_a_page_over_the_tls_vip_with_http2() {
    require_root!();
    let pki = Pki::new("l7tls-c");
    let s = tls_setup(&pki);
    let profile = pki.dir.join("chromium");
    let rules = format!("--host-resolver-rules=MAP shop.example {VIP}");
    let data = format!("--user-data-dir={}", profile.display());
    let client = &s.lan.hosts[0].ns;
    // Chromium abandons a load when the host's addresses change under it (ERR_NETWORK_CHANGED),
    // which the link-local address finishing duplicate detection a second after link-up does.
    client.wait_addresses_settled(Duration::from_secs(10));
    let load = || {
        client.output(&[
            "timeout",
            "60",
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            // The test's CA is not in Chromium's store; curl and openssl check the chain above.
            "--ignore-certificate-errors",
            &rules,
            &data,
            "--dump-dom",
            "https://shop.example/",
        ])
    };
    let mut out = load();
    if String::from_utf8_lossy(&out.stderr).contains("ERR_NETWORK_CHANGED") {
        out = load();
    }
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains("proto=https"), "the page arrived over TLS: {dom}\n{}", String::from_utf8_lossy(&out.stderr));
    let lb = &s.lan.hosts[1].ns;
    let status: serde_json::Value = serde_json::from_slice(&s.daemon.ctl(lb, &["--json", "status"]).stdout).unwrap();
    let alpn = &status["vips"][0]["connections"]["tls"]["alpn"];
    assert!(alpn[0][0] == "h2" && alpn[0][1].as_u64().unwrap() >= 1, "Chromium speaks HTTP/2 by ALPN: {alpn}");
}

#[test]
fn behind_an_l4_tier_the_proxy_header_comes_before_the_handshake_and_names_the_client() {
    require_root!();
    let pki = Pki::new("l7tls-d");
    let s = setup_on(443, "sticky = \"hash\"\naccept_proxy = true", &tls_of(&pki, None), "distance = 1");
    let vip: SocketAddr = format!("{VIP}:443").parse().unwrap();
    let ca = pki.ca_file.clone();
    let (proxied, bare) = s.lan.hosts[0].ns.in_thread(|| {
        let header = format!("PROXY TCP4 203.0.113.5 {VIP} 41000 443\r\n");
        let mut c =
            TlsClient::connect_after(vip, header.as_bytes(), "shop.example", &ca).expect("TLS after the header");
        (c.get("shop.example", "/").unwrap(), TlsClient::connect(vip, "shop.example", &ca).map(|_| ()))
    });
    assert!(proxied.starts_with("HTTP/1.1 200"), "{proxied}");
    assert!(proxied.contains("xff=203.0.113.5 ") && proxied.contains("proto=https"), "{proxied}");
    assert!(bare.is_err(), "a handshake without the header is refused");
}
