//! Ports for test servers, and waiting until a server runs: that the process we started listens, not another one.
//!
//! Tests inside one binary run in parallel, so two fixtures must never get the same port, and a port must not be
//! taken between being picked and being bound. Ports are therefore handed out at most once per process, from
//! below the kernel's ephemeral range (which `bind(0)` and every outgoing connection draw from), at an offset that
//! depends on the process ID (so that test binaries running side by side start far apart), and only if binding
//! them on the host they are for succeeds right now. Whether the child then listens on its port is checked in
//! `/proc`: an answer on the port can only come from it.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::process::Child;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The lowest port handed out from the fixed window.
const WINDOW_START: u16 = 15_000;
/// Ports from here up are left alone: Kubernetes' NodePort range (30000-32767) starts here, and the kernel's
/// ephemeral range usually at 32768.
const WINDOW_END: u16 = 30_000;

struct Ports {
    handed_out: HashSet<u16>,
    next: u16,
}

static PORTS: Mutex<Option<Ports>> = Mutex::new(None);

/// A free loopback port: never handed out before in this process, and bindable on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    free_port_on(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// A port free on `host` (an address of this machine): never handed out before in this process (on any host), and
/// bindable on `host` right now.
pub fn free_port_on(host: IpAddr) -> u16 {
    let mut guard = PORTS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let ports = guard.get_or_insert_with(|| Ports { handed_out: HashSet::new(), next: first_port() });
    let (start, end) = window();
    // The window, once round from the process's offset.
    for _ in 0..(end - start) {
        let candidate = ports.next;
        ports.next = if candidate + 1 >= end { start } else { candidate + 1 };
        if !ports.handed_out.contains(&candidate) && bindable(host, candidate) {
            ports.handed_out.insert(candidate);
            return candidate;
        }
    }
    // The window is used up or unusable: let the kernel pick, still never the same port twice.
    for _ in 0..1000 {
        let listener = TcpListener::bind((host, 0)).expect("bind an ephemeral port");
        let port = listener.local_addr().expect("local addr").port();
        if ports.handed_out.insert(port) {
            return port;
        }
    }
    panic!("no free port on {host}")
}

/// The window below the ephemeral range: `[WINDOW_START, min(ephemeral start, WINDOW_END))`.
fn window() -> (u16, u16) {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let end = ephemeral_start.min(WINDOW_END);
    if end > WINDOW_START { (WINDOW_START, end) } else { (WINDOW_START, WINDOW_START) }
}

fn first_port() -> u16 {
    let (start, end) = window();
    if end == start {
        return start;
    }
    // Far apart for different processes: a large odd stride over the window.
    start + ((std::process::id() as u64 * 7919) % u64::from(end - start)) as u16
}

fn bindable(host: IpAddr, port: u16) -> bool {
    TcpListener::bind((host, port)).is_ok()
}

/// Waits until something accepts TCP connections at `addr`, or fails after `timeout`. Prefer
/// [`wait_for_child_port`] for a server this process started: this cannot tell whose server answers.
pub async fn wait_for_port(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("nothing listens on {addr} after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the process `child` listens on `addr`, failing as soon as it exits, or after `timeout`.
pub async fn wait_for_child_port(child: &mut Child, addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        ensure_running(child, addr)?;
        if listens(child.id(), addr) {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("process {} does not listen on {addr} after {timeout:?}", child.id());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Fails unless `child` still runs and listens on `addr`: what answered there came from it. Called after a server
/// answered its readiness probe.
pub fn ensure_serving(child: &mut Child, addr: SocketAddr) -> anyhow::Result<()> {
    ensure_running(child, addr)?;
    anyhow::ensure!(listens(child.id(), addr), "process {} no longer listens on {addr}", child.id());
    Ok(())
}

fn ensure_running(child: &mut Child, addr: SocketAddr) -> anyhow::Result<()> {
    if let Some(status) = child.try_wait()? {
        anyhow::bail!("the server for {addr} (process {}) exited: {status}", child.id());
    }
    Ok(())
}

/// Whether process `pid` (or a process it started, for a server binary behind a wrapper script) holds a socket
/// listening on `addr`: the socket's inode, found in `/proc/net/tcp{,6}`, is one of the process's open files.
pub fn listens(pid: u32, addr: SocketAddr) -> bool {
    let inodes = listening_inodes(addr);
    if inodes.is_empty() {
        return false;
    }
    family(pid).into_iter().any(|pid| {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
        fds.filter_map(Result::ok).filter_map(|fd| std::fs::read_link(fd.path()).ok()).any(|target| {
            target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:[")?.strip_suffix(']')?.parse::<u64>().ok())
                .is_some_and(|inode| inodes.contains(&inode))
        })
    })
}

/// `pid` and all its descendants.
fn family(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| {
                    let child: u32 = entry.file_name().to_str()?.parse().ok()?;
                    let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
                    // pid (comm) state ppid ...; comm may hold spaces and parentheses.
                    let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
                    Some((child, ppid))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut family = vec![pid];
    let mut i = 0;
    while i < family.len() {
        let parent = family[i];
        family.extend(parents.iter().filter(|(_, ppid)| *ppid == parent).map(|(child, _)| *child));
        i += 1;
    }
    family
}

/// Inodes of the sockets listening on `addr` (or on the wildcard address of its family, at its port).
fn listening_inodes(addr: SocketAddr) -> HashSet<u64> {
    let mut inodes = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
            let (Some(local), Some(state), Some(inode)) = (fields.get(1), fields.get(3), fields.get(9)) else {
                continue;
            };
            if *state != "0A" {
                continue;
            }
            let Some((ip, port)) = parse_proc_addr(local) else { continue };
            let ip_matches = ip == addr.ip() || ip.is_unspecified() || mapped_v4(ip) == Some(addr.ip());
            if port == addr.port()
                && ip_matches
                && let Ok(inode) = inode.parse()
            {
                inodes.insert(inode);
            }
        }
    }
    inodes
}

fn mapped_v4(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V4(_) => None,
    }
}

/// `0100007F:1F90` (IPv4 in network byte order printed as a host-order word) or the IPv6 form (four such words).
fn parse_proc_addr(text: &str) -> Option<(IpAddr, u16)> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |hex: &str| u32::from_str_radix(hex, 16).ok().map(|w| w.to_ne_bytes());
    let ip = match ip.len() {
        8 => IpAddr::from(word(ip)?),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(&ip[i * 8..i * 8 + 8])?);
            }
            IpAddr::from(bytes)
        }
        _ => return None,
    };
    Some((ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests that hand out ports run one at a time: one of them occupies the port the other would get next.
    static SERIAL: Mutex<()> = Mutex::new(());

    #[test]
    fn no_port_is_handed_out_twice_and_each_was_free() {
        let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        for port in ports {
            assert!(bindable(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
        }
    }

    #[test]
    fn a_taken_port_is_skipped() {
        let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut guard = PORTS.lock().unwrap();
        let ports = guard.get_or_insert_with(|| Ports { handed_out: HashSet::new(), next: first_port() });
        // Occupy the very port the next call would try.
        let next = ports.next;
        drop(guard);
        // If this bind fails, another process holds the port: it is taken either way.
        let _taken = TcpListener::bind(("127.0.0.1", next));
        assert_ne!(free_port(), next);
    }

    #[test]
    fn a_listener_is_found_as_this_process_s_and_not_another_s() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(listens(std::process::id(), addr));
        let mut other = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let held_by_other = listens(other.id(), addr);
        let _ = other.kill();
        let _ = other.wait();
        assert!(!held_by_other, "another process does not hold this test's socket");
        drop(listener);
        assert!(!listens(std::process::id(), addr));
    }

    #[test]
    fn proc_addresses_parse() {
        assert_eq!(parse_proc_addr("0100007F:1F90"), Some((IpAddr::V4(Ipv4Addr::LOCALHOST), 8080)));
        assert_eq!(
            parse_proc_addr("00000000000000000000000001000000:0050"),
            Some((IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), 80))
        );
    }
}
