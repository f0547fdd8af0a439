//! Loading the XDP object and attaching its programs.

use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    programs::{ProgramError, Xdp, XdpMode},
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

/// A failure to load or attach, naming what failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The object file could not be read.
    #[error("cannot read XDP object {path}: {source}")]
    Read {
        /// The path given with `--bpf-object`.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The kernel refused the object (verifier, map creation, missing privileges).
    #[error("loading the XDP object failed (run as root on a kernel with BPF and BTF): {0}")]
    Load(#[from] aya::EbpfError),
    /// The object does not contain a map or program the daemon relies on.
    #[error("the XDP object has no {kind} named `{name}`: it does not match this daemon")]
    Missing {
        /// "map" or "program".
        kind: &'static str,
        /// The name looked for.
        name: &'static str,
    },
    /// Verifier or kernel error on a program.
    #[error("program `{name}`: {source}")]
    Program {
        /// The program.
        name: &'static str,
        /// Why.
        source: ProgramError,
    },
}

/// The loaded object: its programs (loaded into the kernel) and maps.
pub struct Dataplane {
    ebpf: Ebpf,
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
            std::fs::create_dir_all(dir).map_err(|source| LoadError::Read { path: dir.to_owned(), source })?;
        }
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(bytes)?;
        for name in maps::ALL {
            if ebpf.map(name).is_none() {
                return Err(LoadError::Missing { kind: "map", name });
            }
        }
        for name in [BALANCER_PROGRAM, PASS_PROGRAM] {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or(LoadError::Missing { kind: "program", name })?
                .try_into()
                .map_err(|source| LoadError::Program { name, source })?;
            prog.load().map_err(|source| LoadError::Program { name, source })?;
        }
        Ok(Self { ebpf })
    }

    /// The loaded object.
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    /// The loaded object, for map access.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// A loaded program (`BALANCER_PROGRAM` or `PASS_PROGRAM`), e.g. for `BPF_PROG_TEST_RUN`.
    ///
    /// # Panics
    /// If `name` is not one of the two; `load` checked both exist.
    pub fn program(&self, name: &str) -> &Xdp {
        self.ebpf.program(name).and_then(|p| p.try_into().ok()).expect("checked at load")
    }

    /// Attaches program `name` to `iface`. `Auto` tries native mode and falls back to generic
    /// mode with a warning, because veth and most NICs do native but some virtual devices do not.
    ///
    /// # Errors
    /// The attach error of the last mode tried, naming the interface.
    pub fn attach(&mut self, name: &'static str, iface: &str, mode: XdpModeSetting) -> Result<(), LoadError> {
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
                Ok(_) => {
                    info!(program = name, iface, mode = ?m, "attached");
                    return Ok(());
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
