//! Tables for people; `--json` prints the same data for scripts.

use balancer::{control::protocol::Status, dataplane::stats::Snapshot};

/// `balancer status`.
pub fn status(s: &Status) {
    for v in &s.vips {
        println!(
            "VIP {} {} {}  ring {}  packets {}  bytes {}  new flows {}",
            v.address,
            format!("{:?}", v.protocol).to_lowercase(),
            format!("{:?}", v.forwarding).to_lowercase(),
            v.ring_size,
            v.packets,
            v.bytes,
            v.new_flows
        );
        println!(
            "  {:<26} {:>5} {:>6} {:<8} {:<9} {:>6} {:>7} {:>10} {:>12} {:>9}",
            "BACKEND", "ID", "WEIGHT", "STATE", "HEALTH", "GROUP", "SHARE", "PACKETS", "BYTES", "NEW"
        );
        for b in &v.backends {
            let group = if b.backup { format!("b{}", b.distance) } else { b.distance.to_string() };
            println!(
                "  {:<26} {:>5} {:>6} {:<8} {:<9} {:>6} {:>6.2}% {:>10} {:>12} {:>9}",
                b.address,
                b.id,
                b.weight,
                format!("{:?}", b.state).to_lowercase(),
                b.health,
                group,
                b.share,
                b.packets,
                b.bytes,
                b.new_flows
            );
        }
    }
    let passed: Vec<String> = s.not_balanced.iter().filter(|(_, n)| *n > 0).map(|(r, n)| format!("{r}={n}")).collect();
    println!("not balanced: {}", if passed.is_empty() { "none".into() } else { passed.join(" ") });
}

/// `balancer vip list`.
pub fn vips(s: &Status) {
    println!("{:<30} {:<5} {:<5} {:>6} {:>9}", "VIP", "PROTO", "MODE", "RING", "BACKENDS");
    for v in &s.vips {
        println!(
            "{:<30} {:<5} {:<5} {:>6} {:>9}",
            v.address.to_string(),
            format!("{:?}", v.protocol).to_lowercase(),
            format!("{:?}", v.forwarding).to_lowercase(),
            v.ring_size,
            v.backends.len()
        );
    }
}

/// `balancer stats`.
pub fn stats(s: &Snapshot) {
    println!("{:<28} {:>5} {:>12} {:>14} {:>10}", "VIP", "PROTO", "PACKETS", "BYTES", "NEW FLOWS");
    for v in &s.vips {
        println!("{:<28} {:>5} {:>12} {:>14} {:>10}", v.vip, v.protocol, v.traffic.packets, v.traffic.bytes, v.traffic.new_flows);
    }
    println!();
    println!("{:<6} {:<28} {:<8} {:>12} {:>14} {:>10}", "ID", "BACKEND", "STATE", "PACKETS", "BYTES", "NEW FLOWS");
    for b in &s.backends {
        println!(
            "{:<6} {:<28} {:<8} {:>12} {:>14} {:>10}",
            b.id, b.address, b.state, b.traffic.packets, b.traffic.bytes, b.traffic.new_flows
        );
    }
    println!();
    println!("not balanced: {}", s.not_balanced.iter().map(|(r, n)| format!("{r}={n}")).collect::<Vec<_>>().join(" "));
}
