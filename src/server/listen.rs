//! Listening sockets. One shard listens on one socket; several shards each
//! have their own socket bound to the same address with `SO_REUSEPORT`, and
//! the kernel spreads new connections over them, so each shard accepts on
//! its own and none wakes for another's connections.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};

use mio::net::TcpListener;

/// What `listen(2)` is told: the kernel caps it at `net.core.somaxconn`.
const BACKLOG: i32 = 1024;

/// `count` listening sockets on `addr`. With more than one they share the
/// port through `SO_REUSEPORT`; a port of 0 is chosen by the first and used
/// by the rest.
pub(crate) fn bind(addr: SocketAddr, count: usize) -> io::Result<Vec<TcpListener>> {
    if count <= 1 {
        return Ok(vec![TcpListener::bind(addr)?]);
    }
    let first = reuse_port(addr)?;
    let addr = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..count {
        all.push(reuse_port(addr)?);
    }
    Ok(all)
}

/// A non-blocking listening socket on `addr` with `SO_REUSEADDR` and
/// `SO_REUSEPORT` set before it binds, which std's `bind` cannot do.
fn reuse_port(addr: SocketAddr) -> io::Result<TcpListener> {
    let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: socket(2) returns a new descriptor or -1; OwnedFd closes it on every path below.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a descriptor this function just opened and owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    for option in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
        let on: libc::c_int = 1;
        let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a valid descriptor and a pointer to a c_int of the given length.
        if unsafe { libc::setsockopt(raw, libc::SOL_SOCKET, option, (&on as *const libc::c_int).cast(), len) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let (storage, len) = sockaddr(addr);
    // SAFETY: storage holds a sockaddr of the family the socket was made with, len bytes long.
    if unsafe { libc::bind(raw, (&storage as *const libc::sockaddr_storage).cast(), len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a valid, bound stream socket.
    if unsafe { libc::listen(raw, BACKLOG) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TcpListener::from_std(std::net::TcpListener::from(fd)))
}

/// `addr` as the C structure `bind(2)` takes, and its length.
fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data for which all zeroes is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: v6.ip().octets() },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_share_one_port() {
        let all = bind("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let ports: Vec<u16> = all.iter().map(|l| l.local_addr().unwrap().port()).collect();
        assert!(ports[0] != 0 && ports.iter().all(|&p| p == ports[0]), "{ports:?}");
        let six = bind("[::1]:0".parse().unwrap(), 2);
        // Machines without IPv6 loopback refuse the bind; the others share the port.
        if let Ok(six) = six {
            assert_eq!(six[0].local_addr().unwrap().port(), six[1].local_addr().unwrap().port());
        }
    }
}
