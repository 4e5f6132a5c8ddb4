//! Handing a running relay to a new process without a client noticing: the
//! listening sockets, every connection's socket and every shard's state go to
//! the binary now at the relay's own path, which carries on where this one
//! stops; the old process then exits without closing anything.
//!
//! The two processes talk over a `SOCK_SEQPACKET` socket pair, one message
//! per packet, sockets passed as `SCM_RIGHTS`:
//!
//! ```text
//! new → old  H  hello: format version u16, pid u32        (the new binary is up)
//!            … the old process freezes its shards and exports them …
//! old → new  F  descriptors (up to 250 per packet)        (listeners, clients, lingering)
//! old → new  S  state, in pieces of up to 60 KiB: takeovers u64, shards u16, then per
//!               shard the core's state and the driver's, each as bytes
//! old → new  E  end of the state
//! new → old  R  ready: every shard imported, every socket registered
//!         or X  the reason it cannot, as text
//! old → new  G  go: the old process serves no more
//! new → old  D  done: the new process is the service's main process (systemd told)
//! ```
//!
//! The old process keeps serving until it has the hello, and freezes only
//! from then on, so the clients' pause is the state's transfer and import
//! alone, not the new binary's start. Anything short of `R` within the
//! deadline — the binary does not start or exits, speaks another version,
//! refuses the state, hangs — and the old process kills it, thaws its
//! shards and serves on as if nothing happened. After `G` it is committed:
//! it exits once the new one says `D`, or after a deadline.

use std::ffi::OsString;
use std::io;
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{error, info, warn};

use super::shard::{Command as ShardCommand, Exported, Mailbox};
use crate::STATE_VERSION;

/// The environment variable that tells a new process it takes over, and
/// from which descriptor.
pub(crate) const FD_VAR: &str = "WS_RELAY_TAKEOVER_FD";

/// How long the new binary has to start and say hello.
const START_DEADLINE: Duration = Duration::from_secs(5);

/// How long it has to import everything and say it is ready.
const IMPORT_DEADLINE: Duration = Duration::from_secs(5);

/// How long the shards have to freeze.
const FREEZE_DEADLINE: Duration = Duration::from_secs(2);

/// After `go`, how long the old process waits for `done` before it exits anyway.
const DONE_DEADLINE: Duration = Duration::from_secs(2);

/// The most descriptors in one packet (the kernel's limit is 253).
const FDS_PER_PACKET: usize = 250;

/// The most state bytes in one packet: well within a socket's send buffer.
const CHUNK: usize = 60 * 1024;

/// What the old process needs to start its successor.
#[derive(Clone, Debug)]
pub struct Successor {
    /// The binary to start: the relay's own path, read when it started, so a
    /// file put in its place since is what runs.
    pub program: PathBuf,
    /// Its arguments: the relay's own.
    pub args: Vec<OsString>,
}

/// One takeover at a time.
pub(super) struct Handover {
    successor: Successor,
    mailboxes: Arc<[Mailbox]>,
    takeovers: u64,
    running: Arc<AtomicBool>,
}

impl Handover {
    pub(super) fn new(successor: Successor, mailboxes: Arc<[Mailbox]>, takeovers: u64) -> Self {
        Self { successor, mailboxes, takeovers, running: Arc::new(AtomicBool::new(false)) }
    }

    /// Starts a takeover on a thread of its own, unless one is under way.
    pub(super) fn start(&self) {
        if self.running.swap(true, Ordering::SeqCst) {
            warn!("takeover: one is under way already");
            return;
        }
        let (successor, mailboxes, takeovers, running) =
            (self.successor.clone(), self.mailboxes.clone(), self.takeovers, self.running.clone());
        let spawned = std::thread::Builder::new().name("takeover".into()).spawn(move || {
            if let Err(e) = hand_over(&successor, &mailboxes, takeovers) {
                error!("takeover failed, serving on: {e}");
            }
            running.store(false, Ordering::SeqCst);
        });
        if let Err(e) = spawned {
            error!("takeover: cannot start its thread: {e}");
            self.running.store(false, Ordering::SeqCst);
        }
    }
}

/// The old process's side. Returns only if the takeover failed, with the
/// shards serving again; on success the process exits.
fn hand_over(successor: &Successor, mailboxes: &[Mailbox], takeovers: u64) -> Result<(), String> {
    let (ours, theirs) = seqpacket_pair().map_err(|e| format!("socketpair: {e}"))?;
    let child = spawn(successor, &theirs).map_err(|e| format!("cannot start {}: {e}", successor.program.display()))?;
    drop(theirs);
    let mut child = Guard(Some(child));
    let pid = child.0.as_ref().map_or(0, Child::id);
    info!("takeover: started {} as pid {pid}", successor.program.display());
    let link = Link(ours);
    let hello = link.recv(START_DEADLINE).map_err(|e| format!("pid {pid} did not say hello: {e}"))?;
    match hello.as_slice() {
        [b'H', v0, v1, ..] if u16::from_le_bytes([*v0, *v1]) == STATE_VERSION => {}
        [b'H', v0, v1, ..] => {
            return Err(format!(
                "pid {pid} reads state format {}, this process writes {STATE_VERSION}",
                u16::from_le_bytes([*v0, *v1])
            ))
        }
        _ => return Err(format!("pid {pid} sent no hello")),
    }
    let started = Instant::now();
    let exported = freeze(mailboxes)?;
    // From here every client waits: what follows is the pause they see.
    let sent = send_state(&link, &exported, takeovers);
    let verdict = sent.and_then(|()| link.recv(IMPORT_DEADLINE).map_err(|e| e.to_string()));
    match verdict.as_deref() {
        Ok([b'R', ..]) => {}
        other => {
            let why = match other {
                Ok([b'X', reason @ ..]) => String::from_utf8_lossy(reason).into_owned(),
                Ok(_) => "an unexpected message".into(),
                Err(e) => e.clone(),
            };
            drop(child);
            thaw(mailboxes);
            return Err(format!("pid {pid} did not take the state: {why}"));
        }
    }
    if let Err(e) = link.send(b"G", &[]) {
        drop(child);
        thaw(mailboxes);
        return Err(format!("pid {pid} is gone before it could take over: {e}"));
    }
    // Committed: the new process serves every client now.
    child.0.take();
    let done = link.recv(DONE_DEADLINE);
    let clients: usize = exported.iter().map(|e| e.clients).sum();
    info!(
        "takeover: pid {pid} serves {clients} connections after a pause of {:?}{}; exiting",
        started.elapsed(),
        if done.is_ok() { "" } else { " (it did not confirm)" },
    );
    log::logger().flush();
    // No destructor runs: closing our copies of the sockets sends nothing, and
    // the shards must not touch them again.
    std::process::exit(0);
}

/// Kills and reaps the new process unless the takeover went through.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts the successor with `fd` as its end of the link.
fn spawn(successor: &Successor, fd: &OwnedFd) -> io::Result<Child> {
    let raw = fd.as_raw_fd();
    let mut command = Command::new(&successor.program);
    command.args(&successor.args).env(FD_VAR, raw.to_string());
    // SAFETY: fcntl is async-signal-safe, and this runs in the child before exec
    // on a descriptor the child inherited: it clears close-on-exec so the new
    // binary keeps it.
    unsafe {
        command.pre_exec(move || {
            if libc::fcntl(raw, libc::F_SETFD, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn()
}

/// Asks every shard to freeze, then to export; the shards then wait, frozen,
/// for a thaw or the process's end.
fn freeze(mailboxes: &[Mailbox]) -> Result<Vec<Exported>, String> {
    let (tx, rx) = mpsc::channel();
    for m in mailboxes {
        m.send(ShardCommand::Freeze { done: tx.clone() });
    }
    let deadline = Instant::now() + FREEZE_DEADLINE;
    for _ in mailboxes {
        if rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_err() {
            thaw(mailboxes);
            return Err("the shards did not freeze in time".into());
        }
    }
    let (tx, rx) = mpsc::channel();
    for m in mailboxes {
        m.send(ShardCommand::Export { reply: tx.clone() });
    }
    let mut exported: Vec<Exported> = Vec::with_capacity(mailboxes.len());
    for _ in mailboxes {
        match rx.recv_timeout(FREEZE_DEADLINE) {
            Ok(Ok(e)) => exported.push(e),
            Ok(Err(e)) => {
                thaw(mailboxes);
                return Err(e);
            }
            Err(_) => {
                thaw(mailboxes);
                return Err("a shard did not export in time".into());
            }
        }
    }
    exported.sort_by_key(|e| e.shard);
    Ok(exported)
}

fn thaw(mailboxes: &[Mailbox]) {
    for m in mailboxes {
        m.send(ShardCommand::Thaw);
    }
}

/// The descriptors, then the state.
fn send_state(link: &Link, exported: &[Exported], takeovers: u64) -> Result<(), String> {
    let fds: Vec<RawFd> = exported.iter().flat_map(|e| e.fds.iter().copied()).collect();
    for chunk in fds.chunks(FDS_PER_PACKET) {
        link.send(b"F", chunk).map_err(|e| format!("passing sockets: {e}"))?;
    }
    // The clients wait while this runs: the parts go out as they are, packed
    // into packets, with no copy of the whole in between.
    let total: usize = 8 + 8 + 2 + exported.iter().map(|e| 8 + e.relay.len() + 8 + e.driver.len() + 4).sum::<usize>();
    let mut header = Vec::with_capacity(18);
    header.extend_from_slice(&(total as u64).to_le_bytes());
    header.extend_from_slice(&takeovers.to_le_bytes());
    header.extend_from_slice(&(exported.len() as u16).to_le_bytes());
    let lengths: Vec<[u8; 8]> =
        exported.iter().flat_map(|e| [e.relay.len(), e.driver.len()]).map(|n| (n as u64).to_le_bytes()).collect();
    let counts: Vec<[u8; 4]> = exported.iter().map(|e| (e.fds.len() as u32).to_le_bytes()).collect();
    let mut parts: Vec<&[u8]> = vec![&header];
    for (i, e) in exported.iter().enumerate() {
        parts.extend([&lengths[2 * i][..], &e.relay, &lengths[2 * i + 1][..], &e.driver, &counts[i][..]]);
    }
    let mut packet = Vec::with_capacity(CHUNK + 1);
    packet.push(b'S');
    for mut part in parts {
        while !part.is_empty() {
            let take = part.len().min(CHUNK + 1 - packet.len());
            packet.extend_from_slice(&part[..take]);
            part = &part[take..];
            if packet.len() == CHUNK + 1 {
                link.send(&packet, &[]).map_err(|e| format!("passing the state: {e}"))?;
                packet.truncate(1);
            }
        }
    }
    if packet.len() > 1 {
        link.send(&packet, &[]).map_err(|e| format!("passing the state: {e}"))?;
    }
    link.send(b"E", &[]).map_err(|e| format!("passing the state: {e}"))
}

/// What a new process receives: every descriptor, in order, and each shard's
/// two states.
pub(super) struct Inherited {
    pub(super) link: Link,
    pub(super) fds: Vec<OwnedFd>,
    pub(super) takeovers: u64,
    /// Every shard's states, one after the other.
    pub(super) state: Vec<u8>,
    /// Per shard: where in `state` the core's state and the driver's are,
    /// and how many of the descriptors are its own (they come shard after shard).
    pub(super) shards: Vec<(Range<usize>, Range<usize>, usize)>,
}

/// The new process's side, up to the state: says hello on `fd` and reads
/// what the old process sends.
pub(super) fn receive(fd: RawFd) -> Result<Inherited, String> {
    // SAFETY: the old process started us with this descriptor open for us alone
    // (FD_VAR), and nothing else in this process uses it.
    let link = Link(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut hello = vec![b'H'];
    hello.extend_from_slice(&STATE_VERSION.to_le_bytes());
    hello.extend_from_slice(&std::process::id().to_le_bytes());
    link.send(&hello, &[]).map_err(|e| format!("hello: {e}"))?;
    let (mut fds, mut state) = (Vec::new(), Vec::new());
    let mut buf = vec![0; CHUNK + 64];
    loop {
        let (n, mut got) = link.recv_into(&mut buf, START_DEADLINE + IMPORT_DEADLINE).map_err(|e| e.to_string())?;
        match buf[..n].first() {
            Some(b'F') => fds.append(&mut got),
            Some(b'S') => {
                if state.is_empty() && n >= 9 {
                    // The first eight bytes say how much follows: one allocation for it all.
                    let total = u64::from_le_bytes(buf[1..9].try_into().expect("8 bytes"));
                    state.reserve(usize::try_from(total).unwrap_or(0).min(1 << 32));
                }
                state.extend_from_slice(&buf[1..n]);
            }
            Some(b'E') => break,
            _ => return Err("the old process sent something else than its state".into()),
        }
    }
    let mut at: usize = 8;
    let mut take = |n: usize| -> Result<Range<usize>, String> {
        let range = at..at.checked_add(n).filter(|&end| end <= state.len()).ok_or("the state ends early")?;
        at = range.end;
        Ok(range)
    };
    let number = |r: Range<usize>| state[r].iter().rev().fold(0u64, |n, &b| n << 8 | u64::from(b));
    let takeovers = number(take(8)?);
    let count = number(take(2)?);
    let mut shards = Vec::new();
    for _ in 0..count {
        let relay = number(take(8)?);
        let relay = take(usize::try_from(relay).map_err(|_| "a state too large")?)?;
        let driver = number(take(8)?);
        let driver = take(usize::try_from(driver).map_err(|_| "a state too large")?)?;
        let fds = number(take(4)?) as usize;
        shards.push((relay, driver, fds));
    }
    Ok(Inherited { link, fds, takeovers, state, shards })
}

impl Link {
    /// Tells the old process everything is in place, waits for its go and
    /// says done once systemd knows. After an error the old process serves on.
    pub(super) fn commit(&self) -> Result<(), String> {
        self.send(b"R", &[]).map_err(|e| format!("ready: {e}"))?;
        match self.recv(IMPORT_DEADLINE) {
            Ok(go) if go.first() == Some(&b'G') => {}
            _ => return Err("the old process did not let go".into()),
        }
        notify_systemd();
        let _ = self.send(b"D", &[]);
        Ok(())
    }

    /// Tells the old process why this one cannot take over.
    pub(super) fn refuse(&self, why: &str) {
        let mut packet = vec![b'X'];
        packet.extend_from_slice(why.as_bytes());
        let _ = self.send(&packet, &[]);
    }
}

/// One end of the link: a `SOCK_SEQPACKET` socket, blocking, with deadlines.
pub(super) struct Link(OwnedFd);

impl Link {
    fn send(&self, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
        let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
        let bytes = std::mem::size_of_val(fds);
        // SAFETY: CMSG_SPACE only computes a size.
        let space = if fds.is_empty() { 0 } else { (unsafe { libc::CMSG_SPACE(bytes as u32) }) as usize };
        // u64s keep the control buffer aligned as cmsghdr needs.
        let mut control = vec![0u64; space.div_ceil(8)];
        // SAFETY: an all-zero msghdr is a valid empty one.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = space as _;
            // SAFETY: msg_control points at `space` zeroed, aligned bytes, room for
            // one cmsghdr and `bytes` of descriptors, as CMSG_SPACE computed.
            unsafe {
                let cmsg = libc::CMSG_FIRSTHDR(&msg);
                (*cmsg).cmsg_level = libc::SOL_SOCKET;
                (*cmsg).cmsg_type = libc::SCM_RIGHTS;
                (*cmsg).cmsg_len = libc::CMSG_LEN(bytes as u32) as _;
                std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cmsg).cast::<RawFd>(), fds.len());
            }
        }
        loop {
            // SAFETY: msg points at live buffers for the call's duration.
            let n = unsafe { libc::sendmsg(self.0.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
            if n >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn recv(&self, within: Duration) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; 256];
        let (n, fds) = self.recv_into(&mut buf, within)?;
        if !fds.is_empty() {
            return Err(io::Error::other("descriptors where none were expected"));
        }
        buf.truncate(n);
        Ok(buf)
    }

    /// One packet into `buf`, its length and the descriptors that came with
    /// it, within `within`.
    fn recv_into(&self, buf: &mut [u8], within: Duration) -> io::Result<(usize, Vec<OwnedFd>)> {
        set_timeout(&self.0, within)?;
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        // SAFETY: CMSG_SPACE only computes a size.
        let space = unsafe { libc::CMSG_SPACE((FDS_PER_PACKET * std::mem::size_of::<RawFd>()) as u32) } as usize;
        let mut control = vec![0u64; space.div_ceil(8)];
        // SAFETY: an all-zero msghdr is a valid empty one.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let n = loop {
            // SAFETY: msg points at live buffers for the call's duration.
            let n = unsafe { libc::recvmsg(self.0.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
            if n >= 0 {
                break n as usize;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")),
                _ => return Err(e),
            }
        };
        let mut fds = Vec::new();
        // SAFETY: recvmsg filled msg_control with msg_controllen bytes of cmsghdrs;
        // every SCM_RIGHTS one carries descriptors this process now owns.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                    let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<RawFd>();
                    for i in 0..count {
                        fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
            return Err(io::Error::other("a packet or its descriptors were cut short"));
        }
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the other process closed the link"));
        }
        Ok((n, fds))
    }
}

fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two new descriptors into `fds` or returns -1.
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned here alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn set_timeout(fd: &OwnedFd, within: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: within.as_secs() as libc::time_t,
        tv_usec: libc::suseconds_t::from(within.subsec_micros() as i32),
    };
    // SAFETY: a valid descriptor and a pointer to a timeval of the given length.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Under systemd (`Type=notify`, `NotifyAccess=all`), makes this process the
/// service's main process before the old one exits, and waits until systemd
/// has read it (`BARRIER=1`), so it never sees its main process go.
pub(super) fn notify_systemd() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let message = format!("MAINPID={}\nREADY=1\n", std::process::id());
    if let Err(e) = sd_notify(&path, &message) {
        warn!("could not notify systemd: {e}");
    }
}

/// Sends `message` to systemd's notification socket at `path` ("@" for an
/// abstract one), then waits until systemd has processed it.
pub(crate) fn sd_notify(path: &std::ffi::OsStr, message: &str) -> io::Result<()> {
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path);
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => <SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(path)?,
    };
    let socket = UnixDatagram::unbound()?;
    socket.connect_addr(&addr)?;
    socket.send(message.as_bytes())?;
    // The barrier: systemd closes the pipe's write end passed with it once it
    // has handled everything sent before.
    let mut pipe = [0; 2];
    // SAFETY: pipe2 writes two new descriptors or returns -1.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both were just created and are owned here alone.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
    let link = Link(socket.into());
    link.send(b"BARRIER=1", &[write.as_raw_fd()])?;
    drop(write);
    let mut poll = libc::pollfd { fd: read.as_raw_fd(), events: 0, revents: 0 };
    // SAFETY: one valid pollfd; POLLHUP comes when systemd closes its copy.
    if unsafe { libc::poll(&mut poll, 1, 5000) } <= 0 {
        return Err(io::Error::other("systemd did not confirm the notification"));
    }
    Ok(())
}
