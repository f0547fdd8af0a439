//! Runtime overrides: what `balancer backend set` changed (weight, state, backup), kept across
//! reloads and restarts in a state file, as `HAProxy`'s server-state-file keeps what its runtime
//! API set. Without it a drained backend comes back on the next reload.
//!
//! Which wins when the file changes the same field: each override remembers the file's value
//! when it was made (its base). While the file still says that, the override stays; once the
//! file says something else, the operator has edited the file on purpose and the file wins —
//! the override is dropped and the log says so. A backend gone from the file drops its
//! overrides. `balancer overrides` lists them, `balancer overrides clear` removes them.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::config::{BackendAddr, BackendRef, BackendState, Config, Protocol};

/// Why the state file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing it.
    #[error("state_file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not what this version writes.
    #[error("state_file {}: not a state file this version wrote ({source}); move it away to start afresh", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
}

/// One overridden field: the value set at run time, and the file's value when it was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field<T> {
    /// What the CLI set.
    pub value: T,
    /// What the configuration file said then.
    pub base: T,
}

/// What one `backend set` (or the status page) changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// New weight.
    pub weight: Option<u32>,
    /// New administrative state.
    pub state: Option<BackendState>,
    /// New backup flag.
    pub backup: Option<bool>,
    /// New route.
    pub route: Option<String>,
}

/// The overrides of one backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    /// Its VIP.
    pub vip: SocketAddr,
    /// The VIP's protocol.
    pub protocol: Protocol,
    /// The pool (entry `name`) where several share the VIP's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// The backend's address.
    pub backend: IpAddr,
    /// Its port (state files older than ports have none: the address alone names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Route set at run time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Field<Option<String>>>,
    /// Weight set at run time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<Field<u32>>,
    /// State set at run time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Field<BackendState>>,
    /// Backup flag set at run time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<Field<bool>>,
}

/// Every override in force.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overrides {
    /// Per backend.
    pub backends: Vec<Override>,
    /// `balancer node drain` is in force: kept here so that a node drained for maintenance
    /// and then restarted (an upgrade, say) stays withdrawn until `node resume`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drained: bool,
}

/// One override dropped because the file changed the same field (or the backend left it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The backend, as `VIP backend`.
    pub what: String,
    /// Why.
    pub why: String,
}

impl Overrides {
    /// Reads `path`; a missing file is no overrides.
    pub fn load(path: &Path) -> Result<Self, StateError> {
        match std::fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| StateError::Parse { path: path.to_owned(), source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(StateError::Io { path: path.to_owned(), source }),
        }
    }

    /// Writes `path` whole (a temporary file renamed over it), so a crash leaves the old or
    /// the new state, never half of one.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let io = |source| StateError::Io { path: path.to_owned(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_vec_pretty(self).expect("overrides serialize");
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Records a `backend set` of `target`, with `file` the configuration as the file has it.
    /// Backends the file does not list (added at run time) are not recorded: they last until
    /// the next reload, like the rest of a runtime addition.
    pub fn record(&mut self, file: &Config, target: &BackendRef, change: &Change) {
        let Ok((vi, bi)) = file.locate(target) else { return };
        let v = &file.vips[vi];
        let b = &v.backends[bi];
        let key = BackendRef {
            vip: target.vip,
            protocol: target.protocol,
            pool: v.name.clone(),
            backend: BackendAddr { ip: target.backend.ip, port: Some(b.target(target.vip.port()).port()) },
        };
        let at = self.backends.iter().position(|o| o.key() == key);
        let at = at.unwrap_or_else(|| {
            self.backends.push(Override {
                vip: key.vip,
                protocol: key.protocol,
                pool: key.pool.clone(),
                backend: key.backend.ip,
                port: key.backend.port,
                route: None,
                weight: None,
                state: None,
                backup: None,
            });
            self.backends.len() - 1
        });
        let o = &mut self.backends[at];
        if let Some(w) = change.weight {
            o.weight = field(w, b.weight);
        }
        if let Some(s) = change.state {
            o.state = field(s, b.state);
        }
        if let Some(x) = change.backup {
            o.backup = field(x, b.backup);
        }
        if let Some(r) = &change.route {
            o.route = field(Some(r.clone()), b.route.clone());
        }
        self.backends.retain(Override::any);
    }

    /// Applies the overrides to `config` (as read from the file), dropping those the file has
    /// overtaken; returns what was dropped.
    pub fn apply(&mut self, config: &mut Config) -> Vec<Dropped> {
        let mut dropped = Vec::new();
        self.backends.retain_mut(|o| {
            let key = o.key();
            let what = format!("{} {}", o.vip, key.backend);
            let Ok((i, j)) = config.locate(&key) else {
                dropped.push(Dropped { what, why: "no longer in the configuration file".into() });
                return false;
            };
            let b = &mut config.vips[i].backends[j];
            let mut take = |name: &str, overtaken: bool| {
                if overtaken {
                    dropped.push(Dropped { what: what.clone(), why: format!("the file changed its {name}") });
                }
                !overtaken
            };
            if let Some(f) = o.weight {
                if take("weight", b.weight != f.base) { b.weight = f.value } else { o.weight = None }
            }
            if let Some(f) = o.state {
                if take("state", b.state != f.base) { b.state = f.value } else { o.state = None }
            }
            if let Some(f) = o.backup {
                if take("backup flag", b.backup != f.base) { b.backup = f.value } else { o.backup = None }
            }
            if let Some(f) = o.route.take()
                && take("route", b.route != f.base)
            {
                b.route.clone_from(&f.value);
                o.route = Some(f);
            }
            o.any()
        });
        dropped
    }

    /// Removes the overrides of `vip` (all of them when `None`), or of one backend of it.
    pub fn clear(&mut self, vip: Option<SocketAddr>, backend: Option<IpAddr>) -> usize {
        let before = self.backends.len();
        self.backends.retain(|o| !(vip.is_none_or(|v| v == o.vip) && backend.is_none_or(|b| b == o.backend)));
        before - self.backends.len()
    }
}

/// An override of `base` by `value`; none when they agree.
fn field<T: PartialEq>(value: T, base: T) -> Option<Field<T>> {
    (value != base).then_some(Field { value, base })
}

impl Override {
    /// Its backend, as `Config::locate` takes it.
    fn key(&self) -> BackendRef {
        BackendRef {
            vip: self.vip,
            protocol: self.protocol,
            pool: self.pool.clone(),
            backend: BackendAddr { ip: self.backend, port: self.port },
        }
    }

    fn any(&self) -> bool {
        self.weight.is_some() || self.state.is_some() || self.backup.is_some() || self.route.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(weight: u32, state: &str) -> Config {
        let text = format!(
            "interfaces = [\"e\"]\n[[vip]]\naddress = \"10.0.0.1:80\"\n[[vip.backend]]\naddress = \"10.0.0.2\"\n\
             weight = {weight}\nstate = \"{state}\"\n[[vip.backend]]\naddress = \"10.0.0.3\"\n"
        );
        Config::parse(&text, Path::new("t.toml")).unwrap()
    }

    fn key(b: u8) -> BackendRef {
        BackendRef {
            vip: "10.0.0.1:80".parse().unwrap(),
            protocol: Protocol::Tcp,
            pool: None,
            backend: BackendAddr { ip: IpAddr::from([10, 0, 0, b]), port: None },
        }
    }

    fn change(weight: Option<u32>, state: Option<BackendState>, backup: Option<bool>) -> Change {
        Change { weight, state, backup, route: None }
    }

    #[test]
    fn an_override_outlives_reloads_until_the_file_changes_the_same_field() {
        let mut o = Overrides::default();
        o.record(&file(100, "active"), &key(2), &change(None, Some(BackendState::Drain), None));
        let mut c = file(100, "active");
        assert!(o.apply(&mut c).is_empty());
        assert_eq!(c.vips[0].backends[0].state, BackendState::Drain, "kept over the unchanged file");
        // The file changes another field: the override stays.
        let mut c = file(50, "active");
        assert!(o.apply(&mut c).is_empty());
        assert_eq!((c.vips[0].backends[0].weight, c.vips[0].backends[0].state), (50, BackendState::Drain));
        // The file changes the same field: the file wins and the override goes.
        let mut c = file(50, "stopped");
        let dropped = o.apply(&mut c);
        assert_eq!(dropped.len(), 1, "{dropped:?}");
        assert!(dropped[0].why.contains("state"), "{dropped:?}");
        assert_eq!(c.vips[0].backends[0].state, BackendState::Stopped);
        assert!(o.backends.is_empty());
    }

    #[test]
    fn setting_a_field_back_to_the_files_value_ends_the_override_and_unknown_backends_are_not_kept() {
        let mut o = Overrides::default();
        o.record(&file(100, "active"), &key(2), &change(Some(7), None, None));
        assert_eq!(o.backends.len(), 1);
        o.record(&file(100, "active"), &key(2), &change(Some(100), None, None));
        assert!(o.backends.is_empty());
        o.record(&file(100, "active"), &key(9), &change(Some(7), None, None));
        assert!(o.backends.is_empty(), "a backend the file does not list");
    }

    #[test]
    fn the_state_file_round_trips_and_a_missing_one_is_empty() {
        let dir = std::env::temp_dir().join(format!("overrides-test-{}", std::process::id()));
        let path = dir.join("state.json");
        assert_eq!(Overrides::load(&path).unwrap(), Overrides::default());
        let mut o = Overrides::default();
        o.record(&file(100, "active"), &key(3), &change(Some(5), Some(BackendState::Drain), Some(true)));
        o.save(&path).unwrap();
        assert_eq!(Overrides::load(&path).unwrap(), o);
        std::fs::write(&path, "not json").unwrap();
        assert!(Overrides::load(&path).unwrap_err().to_string().contains("move it away"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
