//! Headless Chromium driven over its `DevTools` protocol (by Python's `websockets`, which the
//! toolchain script installs): open a page, run a script in it as a user's clicks would, and
//! read what the page shows afterwards.

use std::time::Duration;

use crate::netns::Netns;

/// Starts Chromium with a private profile, opens `url`, waits for it to load, evaluates each
/// of `steps` in the page in turn (each followed by the load it causes, if any), and prints the
/// page's text after each step, separated by a line `=====`.
const DRIVER: &str = r#"
import asyncio, json, os, shutil, subprocess, sys, tempfile, time, urllib.request
import websockets

url, steps = sys.argv[1], json.loads(sys.argv[2])
shot = sys.argv[3] if len(sys.argv) > 3 else None
profile = tempfile.mkdtemp(prefix="balancer-chromium-")
port = 9333
chrome = subprocess.Popen(
    ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
     f"--remote-debugging-port={port}", f"--user-data-dir={profile}", "about:blank"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    tabs = None
    for _ in range(150):
        try:
            tabs = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=1))
            if any(t["type"] == "page" for t in tabs):
                break
        except Exception:
            pass
        time.sleep(0.2)
    page = next(t for t in tabs if t["type"] == "page")

    async def main():
        async with websockets.connect(page["webSocketDebuggerUrl"], max_size=None) as ws:
            ids = iter(range(1, 1_000_000))
            async def call(method, **params):
                n = next(ids)
                await ws.send(json.dumps({"id": n, "method": method, "params": params}))
                while True:
                    m = json.loads(await asyncio.wait_for(ws.recv(), 20))
                    if m.get("id") == n:
                        return m
            async def settle():
                # Until the document is complete and has been for a moment.
                for _ in range(100):
                    r = await call("Runtime.evaluate", expression="document.readyState")
                    if r.get("result", {}).get("result", {}).get("value") == "complete":
                        break
                    await asyncio.sleep(0.1)
                await asyncio.sleep(0.5)
            async def text():
                r = await call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''")
                return r["result"]["result"].get("value", "")
            await call("Page.enable")
            await call("Emulation.setDeviceMetricsOverride", width=1600, height=1000, deviceScaleFactor=1, mobile=False)
            await call("Page.navigate", url=url)
            await settle()
            if shot:
                import base64
                r = await call("Page.captureScreenshot", format="png")
                with open(shot, "wb") as f:
                    f.write(base64.b64decode(r["result"]["data"]))
            print(await text())
            for step in steps:
                await call("Runtime.evaluate", expression=step)
                await asyncio.sleep(0.5)
                await settle()
                print("=====")
                print(await text())
    asyncio.run(main())
finally:
    chrome.kill()
    chrome.wait()
    shutil.rmtree(profile, ignore_errors=True)
"#;

/// Opens `url` in headless Chromium in `ns`, runs `steps` (JavaScript) one after the other,
/// and returns the page's text before the first and after each.
///
/// # Panics
/// When Chromium or the driver fails.
pub fn drive(ns: &Netns, url: &str, steps: &[&str]) -> Vec<String> {
    run(ns, url, steps, None)
}

/// Opens `url` in headless Chromium in `ns` (a 1600×1000 window), saves what it shows to `png`,
/// and returns the page's text.
///
/// # Panics
/// When Chromium or the driver fails.
pub fn screenshot(ns: &Netns, url: &str, png: &std::path::Path) -> String {
    run(ns, url, &[], Some(png)).remove(0)
}

fn run(ns: &Netns, url: &str, steps: &[&str], png: Option<&std::path::Path>) -> Vec<String> {
    let script = std::env::temp_dir().join(format!("{}-chromium.py", ns.name()));
    std::fs::write(&script, DRIVER).expect("write the driver");
    let steps = serde_json::to_string(steps).expect("steps as JSON");
    let mut argv = vec!["timeout", "90", "/usr/bin/python3", script.to_str().unwrap(), url, &steps];
    if let Some(p) = png {
        argv.push(p.to_str().expect("a UTF-8 path"));
    }
    let out = ns.output(&argv);
    let _ = std::fs::remove_file(&script);
    assert!(
        out.status.success(),
        "the Chromium driver failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(100));
    String::from_utf8_lossy(&out.stdout).split("=====\n").map(str::to_owned).collect()
}
