//! Poll waits that end on time. mio hands epoll a timeout in whole
//! milliseconds, rounded up, so a loop that sleeps until its next scheduled
//! send wakes up to a millisecond late whenever no event comes first; every
//! report it then sends carries that lateness into its latency (measured
//! from the schedule, so that a late sender is not forgiven). At the game
//! load's 15,000 sends a second that was most of the median the tool
//! reported, and it shrank whenever the tool got busier. A timerfd armed for
//! the exact instant, in the same poll, wakes it on time.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

/// The timer's token; a loop skips events with it.
pub const TIMER: Token = Token(usize::MAX);

/// A one-shot timer registered in a poll.
pub struct Waiter {
    fd: OwnedFd,
}

impl Waiter {
    /// A timer registered in `poll` under [`TIMER`].
    pub fn new(poll: &Poll) -> io::Result<Self> {
        // SAFETY: plain system calls; the descriptor is owned from here on.
        let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // The default 50 µs of slack would come back as lateness.
        // SAFETY: sets this thread's timer slack to 1 ns; no memory involved.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
        poll.registry().register(&mut SourceFd(&fd.as_raw_fd()), TIMER, Interest::READABLE)?;
        Ok(Self { fd })
    }

    /// Polls until an event or until `timeout` has passed, to the microsecond.
    pub fn poll(&mut self, poll: &mut Poll, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        if let Some(d) = timeout.filter(|d| !d.is_zero()) {
            // Re-arming also clears an expiry nobody read, so the edge comes again.
            let spec = libc::itimerspec {
                it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
                it_value: libc::timespec {
                    tv_sec: d.as_secs() as libc::time_t,
                    tv_nsec: d.subsec_nanos() as libc::c_long,
                },
            };
            // SAFETY: `spec` is a valid itimerspec; the old value is not asked for.
            if unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        poll.poll(events, timeout)
    }
}
