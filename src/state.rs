//! The state store: one directory per container under `--root`, holding
//! `state.json` (replaced by atomic rename) and the monitor's control socket.
//! A flock on the directory serializes verbs that change one container.

use chrono::{DateTime, SecondsFormat, Utc};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use thiserror::Error;

pub const OCI_VERSION: &str = "1.2.0";
const STATE_FILE: &str = "state.json";
const CTL_SOCKET: &str = "ctl.sock";
const SPEC_FILE: &str = "config.json";

#[derive(Debug, Error)]
pub enum StateError {
    #[error("container \"{0}\" does not exist")]
    NotExist(String),
    #[error("container with id exists: {0}")]
    Exists(String),
    #[error("state root {path}: {source}")]
    Root { path: PathBuf, source: io::Error },
    #[error("container {id}: {what}: {source}")]
    Io {
        id: String,
        what: &'static str,
        source: io::Error,
    },
    #[error("container {id}: corrupt state.json: {source}")]
    Corrupt {
        id: String,
        source: serde_json::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        };
        f.write_str(s)
    }
}

/// What microrun keeps about a container. `monitor_start` is the monitor's
/// start time (field 22 of /proc/PID/stat) so a reused pid is never taken
/// for the container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerState {
    pub id: String,
    pub status: Status,
    pub pid: i32,
    #[serde(default)]
    pub monitor_start: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: DateTime<Utc>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub owner: String,
    #[serde(default)]
    pub debug: bool,
    /// The container whose microVM this one runs in (empty: its own).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vm: String,
    /// The process that holds that microVM, and its start time.
    #[serde(default)]
    pub vmm_pid: i32,
    #[serde(default)]
    pub vmm_start: u64,
}

/// The OCI `state` document, as runc prints it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OciState<'a> {
    pub oci_version: &'static str,
    pub id: &'a str,
    pub pid: i32,
    pub status: Status,
    pub bundle: &'a Path,
    pub rootfs: &'a Path,
    pub created: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: &'a BTreeMap<String, String>,
    pub owner: &'a str,
}

impl ContainerState {
    /// The container whose microVM this one runs in.
    pub fn vm_id(&self) -> &str {
        if self.vm.is_empty() {
            &self.id
        } else {
            &self.vm
        }
    }

    /// The status as it is now: a container whose monitor is gone is stopped.
    pub fn current_status(&self) -> Status {
        match self.status {
            Status::Stopped => Status::Stopped,
            Status::Creating if self.pid == 0 => Status::Creating,
            s if process_alive(self.pid, self.monitor_start) => s,
            _ => Status::Stopped,
        }
    }

    pub fn oci(&self) -> OciState<'_> {
        let status = self.current_status();
        OciState {
            oci_version: OCI_VERSION,
            id: &self.id,
            pid: if status == Status::Stopped {
                0
            } else {
                self.pid
            },
            status,
            bundle: &self.bundle,
            rootfs: &self.rootfs,
            created: self.created.to_rfc3339_opts(SecondsFormat::Nanos, true),
            annotations: &self.annotations,
            owner: &self.owner,
        }
    }

    pub fn oci_json(&self) -> String {
        serde_json::to_string(&self.oci()).unwrap_or_default()
    }
}

/// Start time of a process in clock ticks since boot, or None if it is gone
/// or a zombie (an exited monitor not yet reaped by its parent).
pub fn process_start_time(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces and ')': fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    if fields.first().is_some_and(|s| *s == "Z" || *s == "X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

pub fn process_alive(pid: i32, start: u64) -> bool {
    process_start_time(pid).is_some_and(|t| start == 0 || t == start)
}

/// Removes the directories of VMs whose process is gone (killed outright:
/// a VM's process removes its own when it ends). Named `.vm-<id>-<pid>`.
pub fn reap_stale_vm_dirs(root: &Path) {
    let Ok(rd) = fs::read_dir(root) else { return };
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(".vm-")
            .and_then(|rest| rest.rsplit('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() != "microrun-vm" {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

pub struct Store {
    root: PathBuf,
}

impl Store {
    pub fn new(root: &Path) -> Self {
        Store {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn ensure_root(&self) -> Result<(), StateError> {
        fs::create_dir_all(&self.root).map_err(|source| StateError::Root {
            path: self.root.clone(),
            source,
        })?;
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(&self.root, fs::Permissions::from_mode(0o711));
        Ok(())
    }

    /// Creates the directory of a new container, locked. Fails if the id is taken.
    pub fn create(&self, id: &str) -> Result<ContainerDir, StateError> {
        self.ensure_root()?;
        let path = self.root.join(id);
        match fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(StateError::Exists(id.to_string()))
            }
            Err(source) => {
                return Err(StateError::Root {
                    path: self.root.clone(),
                    source,
                })
            }
        }
        ContainerDir::lock(id, path)
    }

    /// Opens and locks an existing container.
    pub fn open(&self, id: &str) -> Result<ContainerDir, StateError> {
        let dir = ContainerDir::lock(id, self.root.join(id))?;
        // A directory removed between our open and the lock is gone.
        if !dir.path.join(STATE_FILE).exists() && !dir.path.exists() {
            return Err(StateError::NotExist(id.to_string()));
        }
        Ok(dir)
    }

    /// Reads a container's state without taking the lock (renames are atomic).
    pub fn peek(&self, id: &str) -> Result<ContainerState, StateError> {
        read_state(id, &self.root.join(id))
    }

    pub fn ids(&self) -> Result<Vec<String>, StateError> {
        let rd = match fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
            Err(source) => {
                return Err(StateError::Root {
                    path: self.root.clone(),
                    source,
                })
            }
        };
        // Dot-directories are the VMs' own (sockets of a VM that outlives
        // the container it was built for), not containers.
        let mut ids: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect();
        ids.sort();
        Ok(ids)
    }
}

fn read_state(id: &str, dir: &Path) -> Result<ContainerState, StateError> {
    let data = match fs::read(dir.join(STATE_FILE)) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(StateError::NotExist(id.to_string()))
        }
        Err(source) => {
            return Err(StateError::Io {
                id: id.to_string(),
                what: "read state.json",
                source,
            })
        }
    };
    serde_json::from_slice(&data).map_err(|source| StateError::Corrupt {
        id: id.to_string(),
        source,
    })
}

/// A container's directory, exclusively locked for as long as this lives.
pub struct ContainerDir {
    id: String,
    path: PathBuf,
    _lock: Flock<File>,
}

impl ContainerDir {
    fn lock(id: &str, path: PathBuf) -> Result<Self, StateError> {
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StateError::NotExist(id.to_string()))
            }
            Err(source) => {
                return Err(StateError::Io {
                    id: id.to_string(),
                    what: "open state dir",
                    source,
                })
            }
        };
        let lock = Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| StateError::Io {
            id: id.to_string(),
            what: "lock state dir",
            source: e.into(),
        })?;
        Ok(ContainerDir {
            id: id.to_string(),
            path,
            _lock: lock,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn ctl_socket(&self) -> PathBuf {
        self.path.join(CTL_SOCKET)
    }

    pub fn load(&self) -> Result<ContainerState, StateError> {
        read_state(&self.id, &self.path)
    }

    pub fn save(&self, state: &ContainerState) -> Result<(), StateError> {
        let io_err = |what| {
            let id = self.id.clone();
            move |source| StateError::Io { id, what, source }
        };
        let data = serde_json::to_vec(state).expect("state serializes");
        write_atomic(&self.path.join(STATE_FILE), &data).map_err(io_err("write state.json"))
    }

    /// Keeps the spec as `create` read it. Later verbs take the hooks and
    /// exec's default process from this copy, as runc does from the config
    /// it saved, not from the bundle's file, which may have changed since.
    pub fn save_spec(&self, spec: &oci_spec::runtime::Spec) -> Result<(), StateError> {
        let data = serde_json::to_vec(spec).map_err(|source| StateError::Corrupt {
            id: self.id.clone(),
            source,
        })?;
        write_atomic(&self.path.join(SPEC_FILE), &data).map_err(|source| StateError::Io {
            id: self.id.clone(),
            what: "write config.json",
            source,
        })
    }

    /// The spec saved at create, if there is one.
    pub fn spec(&self) -> Option<oci_spec::runtime::Spec> {
        let data = fs::read(self.path.join(SPEC_FILE)).ok()?;
        serde_json::from_slice(&data).ok()
    }

    /// Removes every trace of the container.
    pub fn remove(self) -> Result<(), StateError> {
        match fs::remove_dir_all(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Io {
                id: self.id.clone(),
                what: "remove state dir",
                source,
            }),
        }
    }
}

pub fn ctl_socket_path(root: &Path, id: &str) -> PathBuf {
    root.join(id).join(CTL_SOCKET)
}

/// Writes a file by temp file + rename so readers never see a partial file.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let res = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_data()?;
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: &str, pid: i32, start: u64) -> ContainerState {
        ContainerState {
            id: id.into(),
            status: Status::Running,
            pid,
            monitor_start: start,
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: Utc::now(),
            annotations: BTreeMap::new(),
            owner: "root".into(),
            debug: false,
            vm: String::new(),
            vmm_pid: 0,
            vmm_start: 0,
        }
    }

    #[test]
    fn stale_vm_directories_are_reaped_and_live_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dead = tmp.path().join(".vm-a-999999999");
        let not_vm = tmp.path().join("c1");
        std::fs::create_dir_all(&dead).unwrap();
        std::fs::write(dead.join("vsock.sock"), b"").unwrap();
        std::fs::create_dir_all(&not_vm).unwrap();
        reap_stale_vm_dirs(tmp.path());
        assert!(!dead.exists());
        assert!(not_vm.exists());
    }

    #[test]
    fn create_save_load_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path());
        let dir = store.create("c1").unwrap();
        let me = std::process::id() as i32;
        let st = sample("c1", me, process_start_time(me).unwrap());
        dir.save(&st).unwrap();
        assert_eq!(dir.load().unwrap().pid, me);
        assert_eq!(st.current_status(), Status::Running);
        assert!(matches!(store.create("c1"), Err(StateError::Exists(_))));
        drop(dir);
        assert_eq!(store.ids().unwrap(), vec!["c1".to_string()]);
        store.open("c1").unwrap().remove().unwrap();
        assert!(matches!(store.open("c1"), Err(StateError::NotExist(_))));
        assert!(store.ids().unwrap().is_empty());
    }

    #[test]
    fn reused_pid_is_stopped() {
        let me = std::process::id() as i32;
        let st = sample("c", me, process_start_time(me).unwrap() + 1);
        assert_eq!(st.current_status(), Status::Stopped);
        assert_eq!(st.oci().pid, 0);
    }

    #[test]
    fn oci_state_layout() {
        let st = sample("c", 0, 0);
        let v: serde_json::Value = serde_json::from_str(&st.oci_json()).unwrap();
        assert_eq!(v["ociVersion"], OCI_VERSION);
        assert_eq!(v["status"], "stopped");
        assert_eq!(v["pid"], 0);
        let created = v["created"].as_str().unwrap();
        assert!(created.ends_with('Z') && created.contains('.'), "{created}");
        assert_eq!(created.split('.').nth(1).unwrap().len(), 10, "nanoseconds");
    }
}
