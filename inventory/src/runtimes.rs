//! Containers of runtimes other than Docker's API, found from `/proc`: the
//! cgroup path of a process in a network namespace of its own, and the
//! runtime's monitor process that started it (its parent outside that netns).
//!
//! What each runtime leaves there (checked end to end in `e2e/tests/runtimes.rs`):
//!
//! | runtime | cgroup path | monitor (parent outside the netns) | id, name |
//! |---|---|---|---|
//! | podman | `.../libpod-<64 hex>[.scope]` | `conmon -c <id> -n <name> ... --exit-command .../podman` | short id; the name `podman ps` shows (conmon's `-n`) |
//! | CRI-O | `.../crio-<64 hex>[.scope]` | `conmon -c <id> -n <name>` (no podman exit command) | short id; conmon's `-n` (`k8s_<container>_<pod>_...`) |
//! | containerd (`ctr`, CRI) | `/<namespace>/<id>` (cgroupfs), `.../cri-containerd-<id>.scope` (systemd), `/kubepods/.../<id>` | `containerd-shim-runc-v2 -namespace <ns> -id <id>` | the task id (`ctr task ls`; under Kubernetes the id of one of the pod's containers, short when 64 hex) |
//! | LXC | `/lxc.payload.<name>` (`/lxc/<name>` before LXC 4) | `[lxc monitor] <lxcpath> <name>` | the name (`lxc-info -n`) as both |
//! | Docker (when its API does not answer) | `.../docker-<64 hex>.scope`, `/docker/<64 hex>` | `containerd-shim-runc-v2 -namespace moby -id <id>` | short id |
//!
//! The cgroup path is tried first (it names the runtime for every process of
//! the container); the monitor second (containerd's cgroupfs paths name only
//! a namespace and an id, which no path pattern can tell apart from any other
//! cgroup) and for the name (podman and CRI-O keep it only in conmon's
//! arguments).
//!
//! Guarantees: only files under `/proc` are read, each at most [`MAX_READ`]
//! bytes; a process that exits while it is read, or a file that cannot be
//! read, makes that process unattributed, never an error; the parent walk
//! stops after [`MAX_DEPTH`] steps.
//!
//! Not guaranteed: the monitor is found only in the reader's PID namespace
//! (the host's: `pid: host`), and reading another user's `/proc/<pid>/ns/net`
//! needs CAP_SYS_PTRACE when the reader's capabilities are not a superset of
//! the target's. A container sharing the host's netns (`--network host`) has
//! no netns of its own and is not looked at. A runtime whose paths and
//! monitor match none of the rows above is not recognised (its namespace is
//! still attributed by name when it is a named netns under `/run/netns`).

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Most bytes read of one `/proc` file.
pub const MAX_READ: u64 = 64 * 1024;
/// Most parents walked up from a process to find its monitor.
pub const MAX_DEPTH: usize = 16;

/// A container as `/proc` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcContainer {
    /// `podman`, `crio`, `containerd`, `lxc` or `docker`.
    pub runtime: &'static str,
    /// The runtime's id (full length).
    pub id: String,
    /// The runtime's name when it keeps one apart from the id, else the id.
    pub name: String,
}

/// The container runtime and id a cgroup file (`/proc/<pid>/cgroup`) names, if any.
pub fn runtime_of_cgroup(text: &str) -> Option<(&'static str, String)> {
    for line in text.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        for seg in path.split('/').rev() {
            let seg = seg.trim_end_matches(".scope");
            for (prefix, rt) in [
                ("docker-", "docker"),
                ("cri-containerd-", "containerd"),
                ("crio-", "crio"),
                ("libpod-", "podman"),
                ("lxc.payload.", "lxc"),
            ] {
                if let Some(id) = seg.strip_prefix(prefix) {
                    if !id.is_empty() && id != "conmon" && !id.starts_with("conmon-") {
                        return Some((rt, id.to_owned()));
                    }
                }
            }
        }
        // cgroup v1 style: /docker/<64 hex>; LXC before 4.0: /lxc/<name>.
        let parts: Vec<&str> = path.split('/').collect();
        for w in parts.windows(2) {
            if w[0] == "docker" && is_full_id(w[1]) {
                return Some(("docker", w[1].to_owned()));
            }
        }
        if let [_, "lxc", name] = parts.as_slice() {
            if !name.is_empty() {
                return Some(("lxc", (*name).to_owned()));
            }
        }
    }
    None
}

/// Whether `id` is a full 64-hex-digit container id (shown short, 12 digits).
pub fn is_full_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The id as runtimes show it: 12 digits of a full hex id, any other id whole.
pub fn short_id(id: &str) -> &str {
    if is_full_id(id) {
        &id[..12]
    } else {
        id
    }
}

/// The value of flag `name` (`-name V`, `--name V`, `-name=V`) in Go- or getopt-style arguments.
fn flag<'a>(argv: &'a [String], names: &[&str]) -> Option<&'a str> {
    let mut it = argv.iter().skip(1);
    while let Some(a) = it.next() {
        let bare = a.trim_start_matches('-');
        if !a.starts_with('-') {
            continue;
        }
        for n in names {
            if bare == *n {
                return it.next().map(String::as_str);
            }
            if let Some(v) = bare.strip_prefix(n).and_then(|r| r.strip_prefix('=')) {
                return Some(v);
            }
        }
    }
    None
}

/// The container a runtime's monitor process (`argv` from its
/// `/proc/<pid>/cmdline`) runs, if it is one this module knows.
pub fn container_of_monitor(argv: &[String]) -> Option<ProcContainer> {
    let first = argv.first()?;
    // LXC rewrites its monitor's arguments into one string: "[lxc monitor] /var/lib/lxc NAME".
    if first.starts_with("[lxc monitor]") {
        let joined = argv.join(" ");
        let name = joined.split_whitespace().nth(3)?;
        return Some(ProcContainer { runtime: "lxc", id: name.to_owned(), name: name.to_owned() });
    }
    let prog = first.rsplit('/').next().unwrap_or(first);
    if prog.starts_with("containerd-shim") {
        // v2: -namespace NS -id ID; v1: -namespace NS -workdir .../NS/ID.
        let id = flag(argv, &["id"])
            .map(str::to_owned)
            .or_else(|| flag(argv, &["workdir"]).and_then(|w| w.rsplit('/').next()).map(str::to_owned))?;
        if id.is_empty() {
            return None;
        }
        let runtime = if flag(argv, &["namespace"]) == Some("moby") { "docker" } else { "containerd" };
        return Some(ProcContainer { runtime, name: id.clone(), id });
    }
    if prog == "conmon" {
        let id = flag(argv, &["c", "cid"])?.to_owned();
        let name = flag(argv, &["n", "name"]).filter(|n| !n.is_empty()).unwrap_or(&id).to_owned();
        let podman = argv.iter().any(|a| a.rsplit('/').next() == Some("podman"));
        return Some(ProcContainer { runtime: if podman { "podman" } else { "crio" }, id, name });
    }
    None
}

/// Reads at most [`MAX_READ`] bytes of a `/proc` file.
fn read_small(path: &Path) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    std::fs::File::open(path).ok()?.take(MAX_READ).read_to_end(&mut buf).ok()?;
    Some(buf)
}

/// A process's arguments (`/proc/<pid>/cmdline`, NUL-separated).
fn cmdline(proc_dir: &Path) -> Vec<String> {
    let raw = read_small(&proc_dir.join("cmdline")).unwrap_or_default();
    raw.split(|&b| b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

/// A process's parent pid (`/proc/<pid>/stat`, the field after the command's closing parenthesis).
fn parent_of(proc_dir: &Path) -> Option<u32> {
    let raw = read_small(&proc_dir.join("stat"))?;
    let text = String::from_utf8_lossy(&raw);
    let after = &text[text.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// The container of the process at `proc_dir` (`/proc/<pid>`), whose network
/// namespace has inode `netns`: by its cgroup path, else by its monitor; the
/// name from the monitor where the runtime keeps it there.
pub fn identify(proc_root: &Path, proc_dir: &Path, netns: u64) -> Option<ProcContainer> {
    let by_cgroup = read_small(&proc_dir.join("cgroup"))
        .and_then(|raw| runtime_of_cgroup(&String::from_utf8_lossy(&raw)))
        .map(|(runtime, id)| ProcContainer { runtime, name: id.clone(), id });
    // The monitor: podman and CRI-O keep the name only there; containerd's cgroupfs path names nothing.
    let wants_monitor = by_cgroup.as_ref().is_none_or(|c| matches!(c.runtime, "podman" | "crio"));
    let monitor = if wants_monitor { monitor_of(proc_root, proc_dir, netns) } else { None };
    match (by_cgroup, monitor) {
        (Some(c), Some(m)) if m.id == c.id => Some(ProcContainer { name: m.name, ..c }),
        (Some(c), _) => Some(c),
        (None, m) => m,
    }
}

/// Walks up from `proc_dir` to the first ancestor outside netns `netns` and
/// asks [`container_of_monitor`] about it.
fn monitor_of(proc_root: &Path, proc_dir: &Path, netns: u64) -> Option<ProcContainer> {
    let mut dir = proc_dir.to_path_buf();
    for _ in 0..MAX_DEPTH {
        let parent = parent_of(&dir)?;
        if parent <= 1 {
            return None;
        }
        dir = proc_root.join(parent.to_string());
        let ns = std::fs::metadata(dir.join("ns/net")).ok()?.ino();
        if ns != netns {
            return container_of_monitor(&cmdline(&dir));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn cgroup_paths_name_runtimes() {
        let id = "a".repeat(64);
        assert_eq!(runtime_of_cgroup(&format!("0::/system.slice/docker-{id}.scope\n")), Some(("docker", id.clone())));
        assert_eq!(runtime_of_cgroup(&format!("12:pids:/docker/{id}\n")), Some(("docker", id.clone())));
        assert_eq!(
            runtime_of_cgroup("0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-abc123.scope\n"),
            Some(("containerd", "abc123".into()))
        );
        assert_eq!(
            runtime_of_cgroup("0::/machine.slice/libpod-ff00.scope/container\n"),
            Some(("podman", "ff00".into()))
        );
        // podman with cgroupfs (as on this project's CI host), and its conmon's own cgroup.
        assert_eq!(runtime_of_cgroup(&format!("4:memory:/libpod_parent/libpod-{id}\n")), Some(("podman", id.clone())));
        assert_eq!(runtime_of_cgroup("0::/machine.slice/libpod-conmon-ff00.scope\n"), None);
        assert_eq!(runtime_of_cgroup("0::/lxc.payload.web/init.scope\n"), Some(("lxc", "web".into())));
        assert_eq!(runtime_of_cgroup("9:name=systemd:/lxc.payload.cj-web-1\n"), Some(("lxc", "cj-web-1".into())));
        assert_eq!(runtime_of_cgroup("3:cpu:/lxc/old\n"), Some(("lxc", "old".into())));
        // The LXC monitor's own cgroup is not the container's.
        assert_eq!(runtime_of_cgroup("0::/lxc.monitor.web\n"), None);
        assert_eq!(runtime_of_cgroup("0::/user.slice/user-0.slice/session-1.scope\n"), None);
        // containerd with cgroupfs: /<namespace>/<id> says nothing by itself.
        assert_eq!(runtime_of_cgroup("9:name=systemd:/default/web\n"), None);
    }

    #[test]
    fn short_ids_are_cut_only_from_full_hex_ids() {
        let id = "0123456789abcdef".repeat(4);
        assert_eq!(short_id(&id), "0123456789ab");
        assert_eq!(short_id("cj-lxc-web-12345"), "cj-lxc-web-12345");
        assert_eq!(short_id("ctr-task"), "ctr-task");
    }

    #[test]
    fn monitors_name_their_containers() {
        let id = "b".repeat(64);
        let shim =
            argv("/usr/bin/containerd-shim-runc-v2 -namespace cjrt -id web-1 -address /run/containerd/containerd.sock");
        assert_eq!(
            container_of_monitor(&shim),
            Some(ProcContainer { runtime: "containerd", id: "web-1".into(), name: "web-1".into() })
        );
        let moby = argv(&format!("/usr/bin/containerd-shim-runc-v2 -namespace moby -id={id} -address /x"));
        assert_eq!(container_of_monitor(&moby).map(|c| (c.runtime, c.id)), Some(("docker", id.clone())));
        let v1 =
            argv(&format!("containerd-shim -namespace k8s.io -workdir /var/lib/containerd/v1/k8s.io/{id} -address /x"));
        assert_eq!(container_of_monitor(&v1).map(|c| c.id), Some(id.clone()));
        let podman = argv(&format!(
            "/usr/bin/conmon --api-version 1 -c {id} -u {id} -r /usr/bin/runc -n cj-web --exit-command /usr/bin/podman"
        ));
        assert_eq!(
            container_of_monitor(&podman),
            Some(ProcContainer { runtime: "podman", id: id.clone(), name: "cj-web".into() })
        );
        let crio = argv(&format!("/usr/bin/conmon -c {id} -n k8s_web_pod_default_1_0 -r /usr/bin/runc"));
        assert_eq!(
            container_of_monitor(&crio).map(|c| (c.runtime, c.name)),
            Some(("crio", "k8s_web_pod_default_1_0".into()))
        );
        let lxc = vec!["[lxc monitor] /var/lib/lxc cj-web".to_owned()];
        assert_eq!(container_of_monitor(&lxc).map(|c| (c.runtime, c.name)), Some(("lxc", "cj-web".into())));
        // Anything else, and a monitor with its id missing, is no container.
        assert_eq!(container_of_monitor(&argv("/bin/bash -c sleep")), None);
        assert_eq!(container_of_monitor(&argv("/usr/bin/containerd-shim-runc-v2 -namespace x")), None);
        assert_eq!(container_of_monitor(&argv("/usr/bin/conmon -n x")), None);
        assert_eq!(container_of_monitor(&[]), None);
    }

    #[test]
    fn the_parent_walk_reads_this_process() {
        let me = Path::new("/proc/self");
        assert_eq!(parent_of(me), Some(std::os::unix::process::parent_id()));
        assert_eq!(cmdline(me), std::env::args().collect::<Vec<_>>());
    }
}
