//! A loaded balancer program programmed from a TOML configuration, with backend MACs made up
//! from their addresses, for packet tests. Nothing is attached: frames go through
//! `BPF_PROG_TEST_RUN`.

use std::{collections::HashMap, net::IpAddr, path::Path};

use balancer::{
    config::Config,
    dataplane::{
        Dataplane,
        ids::Ids,
        loader::{BALANCER_PROGRAM, DECAP_PROGRAM, PASS_PROGRAM},
        plan::{self, NextHop, Plan},
        stats::Snapshot,
        sync,
    },
};

use crate::xdp::{Verdict, run};

/// The MAC the fixture gives a backend: `02:be:` followed by the last four address bytes.
pub fn backend_mac(ip: IpAddr) -> [u8; 6] {
    let o = match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    let t = &o[o.len() - 4..];
    [0x02, 0xbe, t[0], t[1], t[2], t[3]]
}

/// A backend entry's address.
pub fn backend_ip(b: &balancer_common::backend::Backend) -> IpAddr {
    if b.family == balancer_common::family::V4 {
        IpAddr::from(<[u8; 4]>::try_from(&b.addr[..4]).expect("four bytes"))
    } else {
        IpAddr::from(b.addr)
    }
}

/// Which of `candidates` (backend addresses) a forwarded frame went to, by its destination MAC.
///
/// # Panics
/// When the MAC is none of theirs.
pub fn backend_of<'a>(out: &[u8], candidates: &[&'a str]) -> &'a str {
    candidates
        .iter()
        .find(|b| out[..6] == backend_mac(b.parse().unwrap()))
        .unwrap_or_else(|| panic!("frame went to an unknown MAC {:02x?}", &out[..6]))
}

/// A loaded program and the plan last written to its maps.
pub struct Fixture {
    /// The loaded object.
    pub dp: Dataplane,
    /// What was last written.
    pub plan: Plan,
    ids: Ids,
}

impl Fixture {
    /// Loads the embedded object (no pinning) and writes `config` into its maps.
    pub fn new(config: &str) -> Self {
        Self::load(None, config)
    }

    /// Loads the embedded object with its maps pinned in `pin_dir` (reusing maps pinned there
    /// before, and the ids they hold, as a restarted daemon does) and writes `config`.
    pub fn with_pins(pin_dir: &Path, config: &str) -> Self {
        Self::load(Some(pin_dir), config)
    }

    /// Loads the object file `object` (another build of the program) and writes `config`.
    pub fn with_object(object: &Path, config: &str) -> Self {
        Self::load_object(Some(object), None, config)
    }

    fn load(pin_dir: Option<&Path>, config: &str) -> Self {
        // `BALANCER_BPF_OBJECT` swaps in another build of the program (as `--bpf-object` does
        // for the daemon), so a data-path experiment needs no relink of the tests.
        let object = std::env::var_os("BALANCER_BPF_OBJECT").map(std::path::PathBuf::from);
        Self::load_object(object.as_deref(), pin_dir, config)
    }

    fn load_object(object: Option<&Path>, pin_dir: Option<&Path>, config: &str) -> Self {
        let mut dp = Dataplane::load(object, pin_dir, 0).expect("load the XDP object");
        let mut ids = sync::read_ids(&dp).expect("read ids");
        let plan = Self::write(&mut dp, &mut ids, config, None);
        Self { dp, plan, ids }
    }

    /// Writes a new configuration, as the daemon does on a change.
    pub fn apply(&mut self, config: &str) {
        self.plan = Self::write(&mut self.dp, &mut self.ids, config, Some(&self.plan));
    }

    fn write(dp: &mut Dataplane, ids: &mut Ids, config: &str, previous: Option<&Plan>) -> Plan {
        let cfg = Config::parse(config, Path::new("fixture.toml")).expect("fixture config is valid");
        // Every backend is behind the first interface, with its `interface_mtu` if any.
        let mtu = cfg.interfaces.first().and_then(|i| cfg.interface_mtu.get(i)).copied().unwrap_or(0);
        let hops: HashMap<IpAddr, NextHop> = cfg
            .vips
            .iter()
            .flat_map(|v| v.backends.iter().map(|b| *b.address.get_ref()))
            .map(|ip| (ip, NextHop { mac: backend_mac(ip), ifindex: 0, mtu }))
            .collect();
        let plan = plan::plan(&cfg, &hops, &ids.assign(&cfg), |_, _| true, |_, _| 1.0);
        sync::apply(dp, &plan, previous).expect("write maps");
        plan
    }

    /// Writes the interfaces' MACs as the daemon does (`(ifindex, MAC)`), so frames for another
    /// MAC on them are passed.
    pub fn set_local_macs(&mut self, interfaces: &[(u32, [u8; 6])]) {
        let previous = self.plan.clone();
        self.plan.local_macs = plan::local_macs(interfaces.iter().copied());
        sync::apply(&mut self.dp, &self.plan, Some(&previous)).expect("write maps");
    }

    /// The backend the user-space Maglev table names for `key` on VIP `vip` (index in the
    /// configuration): what the program must pick for a new flow.
    pub fn table_backend(&self, vip: usize, key: &balancer_common::flow::FlowKey) -> balancer_common::backend::Backend {
        let v = &self.plan.vips[vip];
        let id = v.ring[(balancer_common::hash::flow_hash(key) % v.meta.ring_size) as usize];
        self.plan.backends.iter().find(|(i, _)| *i == id).expect("planned").1
    }

    /// Runs the balancer program on `frame`.
    pub fn run(&self, frame: &[u8]) -> (Verdict, Vec<u8>) {
        run(self.dp.program(BALANCER_PROGRAM), frame)
    }

    /// Runs the IPIP decapsulation program on `frame`.
    pub fn run_decap(&self, frame: &[u8]) -> (Verdict, Vec<u8>) {
        run(self.dp.program(DECAP_PROGRAM), frame)
    }

    /// Runs the pass-only program on `frame`.
    pub fn run_pass(&self, frame: &[u8]) -> (Verdict, Vec<u8>) {
        run(self.dp.program(PASS_PROGRAM), frame)
    }

    /// Current counters.
    pub fn stats(&self) -> Snapshot {
        Snapshot::from_ebpf(self.dp.ebpf()).expect("read counters")
    }

    /// Count of packets not balanced for reason `name`.
    pub fn reason(&self, name: &str) -> u64 {
        self.stats().not_balanced.iter().find(|(r, _)| *r == name).map(|(_, n)| *n).expect("known reason")
    }
}
