//! What the machine lets the server hold: open files and memory, each turned into a
//! number of clients that `--max-clients` is lowered to when it asks for more.
//!
//! Both limits are the administrator's (`LimitNOFILE=` and `MemoryMax=` under systemd,
//! `ulimit -n` and a cgroup elsewhere). Rather than fail when a limit is reached, with
//! connections beyond it half-served, or be killed by the kernel, the server takes only
//! as many clients as the limits hold, and says so at start-up.

use std::io;
use std::path::PathBuf;

/// File descriptors kept for things other than client connections (listener, epoll,
/// signal pipe, database, WAL, stdio...).
const RESERVED_FDS: u64 = 32;

/// Memory the server uses without clients, at most: the program and its libraries,
/// SQLite's page caches (2 MiB for each of its two connections), the log buffer, and the
/// directory itself (~100 bytes a name).
pub const BASE_MEMORY: u64 = 16 * 1024 * 1024;

/// A memory limit this high is no limit (cgroup v1 writes "no limit" as a number near
/// 2^63).
const UNLIMITED: u64 = 1 << 60;

/// Raises the soft open-files limit to what `max_clients` needs (up to the hard limit)
/// and returns how many clients the final limit allows.
pub fn raise_fd_limit(max_clients: usize) -> usize {
    let wanted = max_clients as u64 + RESERVED_FDS;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        log::warn!(
            "cannot read the open-files limit: {}",
            io::Error::last_os_error()
        );
        return max_clients;
    }
    if limit.rlim_cur < wanted {
        let raised = libc::rlimit {
            rlim_cur: wanted.min(limit.rlim_max),
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct we pass, which lives for the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = raised.rlim_cur;
        } else {
            log::warn!(
                "cannot raise the open-files limit: {}",
                io::Error::last_os_error()
            );
        }
    }
    let allowed =
        usize::try_from(limit.rlim_cur.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
    if allowed < max_clients {
        log::warn!(
            "the open-files limit ({}, hard limit {}) allows only {allowed} clients, not the \
             {max_clients} of --max-clients: raise it (LimitNOFILE= under systemd, ulimit -n)",
            limit.rlim_cur,
            limit.rlim_max
        );
        allowed.max(1)
    } else {
        max_clients
    }
}

/// Lowers `max_clients` to what the memory limit of this process's cgroup holds (if it
/// has one) when each client may take `per_client` bytes at worst; returns the number of
/// clients to take.
pub fn fit_memory(max_clients: usize, per_client: usize) -> usize {
    let Some((limit, file)) = memory_limit() else {
        return max_clients;
    };
    let allowed = clients_within(limit, per_client);
    if allowed < max_clients {
        log::warn!(
            "the memory limit ({} MiB, {}) holds only {allowed} clients at {} KiB each at \
             worst, not the {max_clients} of --max-clients: raise it (MemoryMax= under \
             systemd) to {} MiB, or lower --max-clients",
            limit >> 20,
            file.display(),
            per_client / 1024,
            memory_for(max_clients, per_client) >> 20
        );
        allowed.max(1)
    } else {
        max_clients
    }
}

/// How many clients of `per_client` bytes each fit in `limit` beside [`BASE_MEMORY`].
pub fn clients_within(limit: u64, per_client: usize) -> usize {
    let room = limit.saturating_sub(BASE_MEMORY);
    usize::try_from(room / per_client.max(1) as u64).unwrap_or(usize::MAX)
}

/// The memory limit that holds `clients` of `per_client` bytes each, [`BASE_MEMORY`]
/// included.
pub fn memory_for(clients: usize, per_client: usize) -> u64 {
    BASE_MEMORY.saturating_add((clients as u64).saturating_mul(per_client as u64))
}

/// The lowest memory limit set on this process's cgroup or any above it, and the file
/// that says so; `None` when there is none, or it cannot be read.
fn memory_limit() -> Option<(u64, PathBuf)> {
    let membership = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    limit_files(&membership)
        .into_iter()
        .filter_map(|file| {
            let text = std::fs::read_to_string(&file).ok()?;
            Some((parse_limit(&text)?, file))
        })
        .min_by_key(|(limit, _)| *limit)
}

/// The files that may hold a memory limit for the cgroups of `/proc/self/cgroup`'s
/// `membership`, the process's own first: `memory.max` for cgroup v2 (the `0::` line),
/// `memory.limit_in_bytes` for v1's memory controller.
fn limit_files(membership: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for line in membership.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let (root, file) = if id == "0" && controllers.is_empty() {
            ("/sys/fs/cgroup", "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            ("/sys/fs/cgroup/memory", "memory.limit_in_bytes")
        } else {
            continue;
        };
        // The cgroup and each one above it, up to (not including) the root.
        let mut dir = PathBuf::from(path);
        while dir.parent().is_some() {
            files.push(
                PathBuf::from(root)
                    .join(dir.strip_prefix("/").unwrap_or(&dir))
                    .join(file),
            );
            dir.pop();
        }
    }
    files
}

/// A memory limit file's value in bytes; `None` for no limit.
fn parse_limit(text: &str) -> Option<u64> {
    let limit: u64 = text.trim().parse().ok()?; // "max" is no limit
    (limit < UNLIMITED).then_some(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limits_of_a_cgroup_and_those_above_it_are_looked_for() {
        let v2 = "0::/system.slice/parlo-server.service\n";
        assert_eq!(
            limit_files(v2),
            [
                PathBuf::from("/sys/fs/cgroup/system.slice/parlo-server.service/memory.max"),
                PathBuf::from("/sys/fs/cgroup/system.slice/memory.max"),
            ]
        );
        let v1 = "12:pids:/x\n4:memory:/system.slice/p.service\n0::/\n";
        assert_eq!(
            limit_files(v1),
            [
                PathBuf::from("/sys/fs/cgroup/memory/system.slice/p.service/memory.limit_in_bytes"),
                PathBuf::from("/sys/fs/cgroup/memory/system.slice/memory.limit_in_bytes"),
            ]
        );
        assert!(
            limit_files("0::/\n").is_empty(),
            "the root has no limit file"
        );
        assert!(limit_files("garbage\n").is_empty());
    }

    #[test]
    fn limit_values() {
        assert_eq!(parse_limit("268435456\n"), Some(256 << 20));
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit(""), None);
    }

    #[test]
    fn clients_fit_beside_the_base() {
        let per_client = 40 * 1024;
        assert_eq!(clients_within(BASE_MEMORY, per_client), 0);
        assert_eq!(clients_within(0, per_client), 0);
        assert_eq!(
            clients_within(BASE_MEMORY + 10 * 40 * 1024 + 5, per_client),
            10
        );
        let limit = memory_for(16384, per_client);
        assert_eq!(clients_within(limit, per_client), 16384);
        assert_eq!(clients_within(limit - 1, per_client), 16383);
    }
}
