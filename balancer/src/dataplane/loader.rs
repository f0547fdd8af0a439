//! Loading the XDP object and attaching its programs.

use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    programs::{ProgramError, Xdp, XdpMode, links::FdLink, xdp::XdpLinkId},
};
use balancer_common::maps;
use tracing::{info, warn};

use crate::config::XdpModeSetting;

/// The XDP object built by `cargo xtask build-ebpf`, embedded at build time.
pub static EMBEDDED_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("BALANCER_EBPF_OBJECT_PATH"));

/// Name of the L4 data path program in the object.
pub const BALANCER_PROGRAM: &str = "balancer";
/// Name of the pass-only program (veth peers, benchmark reference).
pub const PASS_PROGRAM: &str = "pass";
/// Name of the IPIP decapsulation program (backends of IPIP VIPs).
pub const DECAP_PROGRAM: &str = "decap";

/// A failure to load or attach, naming what failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The object file could not be read.
    #[error("cannot read XDP object {path}")]
    Read {
        /// The path given with `--bpf-object`.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The kernel refused the object (verifier, map creation, missing privileges).
    #[error("loading the XDP object failed (run as root on a kernel with BPF and BTF)")]
    Load(#[from] aya::EbpfError),
    /// The link could not be pinned or unpinned.
    #[error("pinned link {path}")]
    Pin {
        /// The pin path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The pin directory is unusable.
    #[error("pin directory {path}: {why}")]
    PinDir {
        /// The configured `pin_dir`.
        path: PathBuf,
        /// What is wrong and what to do.
        why: String,
    },
    /// The object does not contain a map or program the daemon relies on.
    #[error("the XDP object has no {kind} named `{name}`: it does not match this daemon")]
    Missing {
        /// "map" or "program".
        kind: &'static str,
        /// The name looked for.
        name: &'static str,
    },
    /// No random bytes for the flow table's secret.
    #[error("reading /dev/urandom for the flow table's secret")]
    Random(#[source] std::io::Error),
    /// Verifier or kernel error on a program.
    #[error("program `{name}`")]
    Program {
        /// The program.
        name: &'static str,
        /// Why.
        source: ProgramError,
    },
}

/// Refuses maps pinned in `dir` whose shape differs from this object's: they were left by
/// another version of balancer (the flow table, say, was a hash map before it became an array),
/// aya would reuse them as they are, and the verifier would then reject the program with a
/// message about stack offsets that tells an operator nothing.
fn check_pinned(dir: &Path, object: &[u8]) -> Result<(), LoadError> {
    let Ok(parsed) = aya_obj::Object::parse(object) else {
        // An object that does not parse fails `load` with the parser's own error.
        return Ok(());
    };
    for name in maps::ALL {
        let path = dir.join(name);
        let Some(want) = parsed.maps.get(name) else { continue };
        if !path.exists() {
            continue;
        }
        let have = aya::maps::MapInfo::from_pin(&path)
            .map_err(|e| LoadError::PinDir { path: path.clone(), why: format!("cannot read the pinned map: {e}") })?;
        let shape =
            |k: u32, v: u32, n: u32, f: u32| format!("{k}-byte keys, {v}-byte values, {n} entries, flags {f:#x}");
        let (had, needs) = (
            shape(have.key_size(), have.value_size(), have.max_entries(), have.map_flags()),
            shape(want.key_size(), want.value_size(), want.max_entries(), want.map_flags()),
        );
        if had != needs {
            return Err(LoadError::PinDir {
                path: dir.to_owned(),
                why: format!(
                    "map {name} pinned there has {had}, this build needs {needs}: another version of balancer left it. \
                     `balancer teardown --pin-dir {}` removes it (the XDP program detaches and established flows are \
                     forgotten); then start again",
                    dir.display()
                ),
            });
        }
    }
    Ok(())
}

/// The flow table's secret: the one `SETTINGS` holds when the maps were pinned by an earlier
/// run (its flows stay findable), else a new random one, written at once so that it is kept
/// with the table.
fn adopt_flow_secret(ebpf: &mut Ebpf) -> Result<u64, LoadError> {
    use aya::maps::{Array, MapData};
    use balancer_common::vip::Settings;
    let map = ebpf.map_mut(maps::SETTINGS).ok_or(LoadError::Missing { kind: "map", name: maps::SETTINGS })?;
    let mut settings: Array<&mut MapData, Settings> = Array::try_from(map).map_err(aya::EbpfError::from)?;
    let held = settings.get(&0, 0).map_err(aya::EbpfError::from)?;
    if held.flow_secret != 0 {
        return Ok(held.flow_secret);
    }
    let mut bytes = [0u8; 8];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").map_err(LoadError::Random)?, &mut bytes)
        .map_err(LoadError::Random)?;
    // Never 0, which means "not chosen yet".
    let flow_secret = u64::from_ne_bytes(bytes) | 1;
    settings.set(0, Settings { flow_secret, ..held }, 0).map_err(aya::EbpfError::from)?;
    Ok(flow_secret)
}

/// Loads XDP program `name` of the object into the kernel.
fn load_program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp, LoadError> {
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or(LoadError::Missing { kind: "program", name })?
        .try_into()
        .map_err(|source| LoadError::Program { name, source })?;
    prog.load().map_err(|source| LoadError::Program { name, source })?;
    Ok(prog)
}

/// Loads the programs of `maps::branch` and puts each at its index of `BRANCHES`, where
/// `balancer` tail-calls them. Pinned, the array keeps the previous run's branches until this
/// replaces them, so the attached program's ICMP and IPIP keep working across a restart.
fn fill_branches(ebpf: &mut Ebpf) -> Result<(), LoadError> {
    use aya::maps::ProgramArray;
    let mut fds = Vec::with_capacity(maps::branch::PROGRAMS.len());
    for name in maps::branch::PROGRAMS {
        let prog = load_program(ebpf, name)?;
        let fd = prog.fd().and_then(|fd| fd.try_clone().map_err(ProgramError::from));
        fds.push(fd.map_err(|source| LoadError::Program { name, source })?);
    }
    // Borrowed, not taken: the kernel empties a program array when the last file descriptor
    // or pin of it goes (the programs using it do not count), so `Ebpf` keeps it open.
    let map = ebpf.map_mut(maps::BRANCHES).ok_or(LoadError::Missing { kind: "map", name: maps::BRANCHES })?;
    let mut branches: ProgramArray<&mut aya::maps::MapData> =
        ProgramArray::try_from(map).map_err(aya::EbpfError::from)?;
    for (index, fd) in (0..).zip(&fds) {
        branches.set(index, fd, 0).map_err(aya::EbpfError::from)?;
    }
    Ok(())
}

/// The loaded object: its programs (loaded into the kernel) and maps.
pub struct Dataplane {
    ebpf: Ebpf,
    /// `RINGS`, mapped; absent for `load_helpers`, whose maps are single entries.
    rings: Option<super::ring_memory::RingMemory>,
    /// `Settings::flow_secret` of the flow table these maps hold.
    flow_secret: u64,
}

impl Dataplane {
    /// Loads an object (the embedded one when `object` is `None`) and both of its programs.
    ///
    /// `pin_dir`: when given, every map is pinned there by name, and maps already pinned there
    /// (by an earlier run) are reused, so the flow table survives a restart.
    /// `log_level`: the most verbose aya-log level the program emits (0 = none, 4 = debug).
    ///
    /// # Errors
    /// `Read`, `Load`, `Missing` or `Program`.
    pub fn load(object: Option<&Path>, pin_dir: Option<&Path>, log_level: u8) -> Result<Self, LoadError> {
        Self::load_with(object, pin_dir, log_level, false)
    }

    /// Loads the object only to attach one of its helper programs (`PASS_PROGRAM`,
    /// `DECAP_PROGRAM`): every map
    /// is created with a single entry, so this costs kilobytes instead of the data path's tables.
    ///
    /// # Errors
    /// As `load`.
    pub fn load_helpers() -> Result<Self, LoadError> {
        Self::load_with(None, None, 0, true)
    }

    fn load_with(object: Option<&Path>, pin_dir: Option<&Path>, log_level: u8, tiny: bool) -> Result<Self, LoadError> {
        let owned;
        let bytes = match object {
            Some(path) => {
                owned = std::fs::read(path).map_err(|source| LoadError::Read { path: path.to_owned(), source })?;
                &owned[..]
            }
            None => EMBEDDED_OBJECT,
        };
        let mut loader = EbpfLoader::new();
        loader.override_global(aya_log::LEVEL, &log_level, true);
        let pins: Vec<(&'static str, PathBuf)> = match pin_dir {
            Some(dir) => maps::ALL.iter().map(|&n| (n, dir.join(n))).collect(),
            None => Vec::new(),
        };
        if let Some(dir) = pin_dir {
            ensure_bpffs(dir)?;
            check_pinned(dir, bytes)?;
        }
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        if tiny {
            for name in maps::ALL {
                loader.map_max_entries(name, 1);
            }
        }
        let mut ebpf = loader.load(bytes)?;
        for name in maps::ALL {
            if ebpf.map(name).is_none() {
                return Err(LoadError::Missing { kind: "map", name });
            }
        }
        for name in [BALANCER_PROGRAM, DECAP_PROGRAM, PASS_PROGRAM] {
            load_program(&mut ebpf, name)?;
        }
        if !tiny {
            fill_branches(&mut ebpf)?;
        }
        let rings = if tiny {
            None
        } else {
            let Some(aya::maps::Map::Array(data)) = ebpf.map(maps::RINGS) else {
                return Err(LoadError::Missing { kind: "map", name: maps::RINGS });
            };
            let mem = super::ring_memory::RingMemory::map(data).map_err(|e| LoadError::PinDir {
                path: pin_dir.map(|d| d.join(maps::RINGS)).unwrap_or_default(),
                why: format!(
                    "cannot mmap the ring map ({e}); if it was pinned by an older build, run \
                     `balancer teardown` and start again"
                ),
            })?;
            Some(mem)
        };
        let flow_secret = if tiny { 0 } else { adopt_flow_secret(&mut ebpf)? };
        Ok(Self { ebpf, rings, flow_secret })
    }

    /// The Maglev tables as memory.
    ///
    /// # Panics
    /// On a `load_helpers` object, which has none.
    pub fn rings(&self) -> &super::ring_memory::RingMemory {
        self.rings.as_ref().expect("not a helper-only load")
    }

    /// The loaded object.
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    /// The secret of this flow table's placement (`Settings::flow_secret`), which every write
    /// of `SETTINGS` keeps.
    pub fn flow_secret(&self) -> u64 {
        self.flow_secret
    }

    /// The backend id the flow table pins `key` to, if it has an entry.
    ///
    /// # Errors
    /// When the map cannot be read.
    pub fn flow_entry(&self, key: &balancer_common::flow::FlowKey) -> Result<Option<u32>, aya::maps::MapError> {
        let place = balancer_common::flow::Place::of(balancer_common::hash::flow_hash64(key), self.flow_secret);
        let map = self.ebpf.map(maps::FLOWS).expect("checked at load");
        let sets: aya::maps::Array<&aya::maps::MapData, balancer_common::flow::FlowSet> =
            aya::maps::Array::try_from(map)?;
        Ok(sets.get(&place.set, 0)?.find(&place))
    }

    /// The maps, and the ring memory, at once.
    ///
    /// # Panics
    /// On a `load_helpers` object.
    pub fn maps_and_rings(&mut self) -> (&mut Ebpf, &super::ring_memory::RingMemory) {
        (&mut self.ebpf, self.rings.as_ref().expect("not a helper-only load"))
    }

    /// The loaded object, for map access.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// A loaded program (`BALANCER_PROGRAM`, `DECAP_PROGRAM` or `PASS_PROGRAM`), e.g. for
    /// `BPF_PROG_TEST_RUN`.
    ///
    /// # Panics
    /// If `name` is not one of those; `load` checked they exist.
    pub fn program(&self, name: &str) -> &Xdp {
        self.ebpf.program(name).and_then(|p| p.try_into().ok()).expect("checked at load")
    }

    /// Attaches program `name` to `iface`. `Auto` tries native mode and falls back to generic
    /// mode with a warning, because veth and most NICs do native but some virtual devices do not.
    ///
    /// # Errors
    /// The attach error of the last mode tried, naming the interface.
    pub fn attach(&mut self, name: &'static str, iface: &str, mode: XdpModeSetting) -> Result<XdpLinkId, LoadError> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .and_then(|p| p.try_into().ok())
            .ok_or(LoadError::Missing { kind: "program", name })?;
        let tries: &[XdpMode] = match mode {
            XdpModeSetting::Auto => &[XdpMode::Driver, XdpMode::Skb],
            XdpModeSetting::Native => &[XdpMode::Driver],
            XdpModeSetting::Generic => &[XdpMode::Skb],
        };
        let mut last = None;
        for &m in tries {
            match prog.attach(iface, m) {
                Ok(id) => {
                    info!(program = name, iface, mode = ?m, "attached");
                    return Ok(id);
                }
                Err(e) => {
                    if tries.len() > 1 {
                        warn!(program = name, iface, mode = ?m, error = %e, "attach failed, trying the next mode");
                    }
                    last = Some(e);
                }
            }
        }
        Err(LoadError::Program { name, source: last.expect("at least one mode tried") })
    }
}

impl Dataplane {
    /// Attaches program `name` to `iface` and pins the link at `pin`, so it stays attached after
    /// this process exits, until `unpin_link(pin)`.
    ///
    /// # Errors
    /// As `attach`, or when the link cannot be pinned (a bpffs directory is needed).
    pub fn attach_pinned(
        &mut self,
        name: &'static str,
        iface: &str,
        mode: XdpModeSetting,
        pin: &Path,
    ) -> Result<(), LoadError> {
        let id = self.attach(name, iface, mode)?;
        let prog: &mut Xdp = self.ebpf.program_mut(name).and_then(|p| p.try_into().ok()).expect("attached above");
        let link = prog.take_link(id).map_err(|source| LoadError::Program { name, source })?;
        let fd = FdLink::try_from(link).map_err(|e| LoadError::Pin {
            path: pin.to_owned(),
            source: std::io::Error::other(format!("the kernel attached without a bpf_link: {e}")),
        })?;
        if let Some(dir) = pin.parent() {
            ensure_bpffs(dir)?;
        }
        fd.pin(pin)
            .map_err(|e| LoadError::Pin { path: pin.to_owned(), source: std::io::Error::other(e.to_string()) })?;
        Ok(())
    }
}

impl Dataplane {
    /// Attaches program `name` to `iface` through the link pinned at `pin`: when a previous
    /// run left one there, its program is replaced in place (the interface is never without
    /// one); otherwise a new link is made and pinned. Returns whether a pinned link was reused.
    ///
    /// # Errors
    /// As `attach_pinned`, or when the pinned link cannot be updated.
    pub fn attach_persistent(
        &mut self,
        name: &'static str,
        iface: &str,
        mode: XdpModeSetting,
        pin: &Path,
    ) -> Result<bool, LoadError> {
        if pin.exists() {
            let prog: &Xdp = self.ebpf.program(name).and_then(|p| p.try_into().ok()).expect("checked at load");
            let fd = prog.fd().map_err(|source| LoadError::Program { name, source })?;
            super::link::replace_program(pin, fd).map_err(|source| LoadError::Pin { path: pin.to_owned(), source })?;
            info!(program = name, iface, pin = %pin.display(), "replaced the program in the pinned link");
            return Ok(true);
        }
        self.attach_pinned(name, iface, mode, pin)?;
        Ok(false)
    }
}

/// Removes a link pinned by `attach_pinned`: the program leaves the interface.
///
/// # Errors
/// When nothing is pinned at `pin`.
pub fn unpin_link(pin: &Path) -> Result<(), LoadError> {
    std::fs::remove_file(pin).map_err(|source| LoadError::Pin { path: pin.to_owned(), source })
}

/// Where `balancer xdp-peer` and `balancer decap` pin the link of `program` on `iface` in the
/// current network namespace: the namespace's inode number keeps equal interface names in
/// different namespaces apart.
pub fn helper_link_pin(pin_dir: &Path, program: &str, iface: &str) -> PathBuf {
    use std::os::unix::fs::MetadataExt as _;
    let ns = std::fs::metadata("/proc/self/ns/net").map_or(0, |m| m.ino());
    pin_dir.join(format!("{program}-{ns}-{iface}"))
}

/// Where bpffs is conventionally mounted.
const BPFFS_ROOT: &str = "/sys/fs/bpf";

/// Makes sure `dir` exists on a bpffs mount. When nothing is mounted at `/sys/fs/bpf` (a fresh
/// machine, or a new mount namespace) it mounts bpffs there, as Cilium and bpftool do; a
/// directory elsewhere must already be on bpffs.
fn ensure_bpffs(dir: &Path) -> Result<(), LoadError> {
    let pin_err = |why: String| LoadError::PinDir { path: dir.to_owned(), why };
    let root = Path::new(BPFFS_ROOT);
    if dir.starts_with(root) && !is_bpffs(root) {
        mount_bpffs(root).map_err(|e| pin_err(format!("mounting bpffs at {BPFFS_ROOT}: {e}")))?;
        info!(path = BPFFS_ROOT, "mounted bpffs");
    }
    std::fs::create_dir_all(dir).map_err(|e| pin_err(format!("cannot create it: {e}")))?;
    if !is_bpffs(dir) {
        return Err(pin_err(format!(
            "not on a bpffs mount: choose a pin_dir under {BPFFS_ROOT}, or `mount -t bpf bpf DIR`"
        )));
    }
    Ok(())
}

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|st| st.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
}

fn mount_bpffs(root: &Path) -> nix::Result<()> {
    nix::mount::mount(Some("bpf"), root, Some("bpf"), nix::mount::MsFlags::empty(), None::<&str>)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_dir_off_bpffs_is_refused_with_what_to_do() {
        let dir = std::env::temp_dir().join(format!("bt-not-bpffs-{}", std::process::id()));
        let e = ensure_bpffs(&dir).unwrap_err().to_string();
        let _ = std::fs::remove_dir(&dir);
        assert!(e.contains("not on a bpffs mount") && e.contains("mount -t bpf"), "{e}");
        assert!(!is_bpffs(Path::new("/proc")));
    }
}
