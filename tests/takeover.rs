//! Takeover over real sockets: clients in a room keep their ids and their
//! stream across `ws-relay --takeover PID`; systemd (a stand-in listening on
//! NOTIFY_SOCKET) hears of the new main process before the old one exits;
//! a successor that cannot take the state leaves the old relay serving.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{send, text, texts, Relay};

const ROOM: &str = "/ws-relay/match";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ws-relay-takeover-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A copy of the relay binary in `dir`, which a test can replace.
fn own_binary(dir: &Path) -> PathBuf {
    let path = dir.join("ws-relay");
    std::fs::copy(env!("CARGO_BIN_EXE_ws-relay"), &path).unwrap();
    path
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

/// Kills the process named by a pid file when the test ends, however it ends.
struct Reaper(PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.0) {
            let _ = Command::new("kill").arg("-9").arg(pid.trim()).stderr(Stdio::null()).status();
        }
    }
}

fn pid_in(file: &Path) -> u32 {
    std::fs::read_to_string(file).unwrap().trim().parse().unwrap()
}

/// Stands in for systemd: every notification sent to the socket at `path`,
/// in order. Descriptors sent with one (the barrier's pipe) are closed as it
/// is read without room for them, as systemd closes them once it has read it.
fn systemd(path: &Path) -> std::sync::mpsc::Receiver<String> {
    let socket = UnixDatagram::bind(path).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0; 512];
        while let Ok(n) = socket.recv(&mut buf) {
            if tx.send(String::from_utf8_lossy(&buf[..n]).into_owned()).is_err() {
                return;
            }
        }
    });
    rx
}

fn notification(notify: &std::sync::mpsc::Receiver<String>) -> String {
    notify.recv_timeout(Duration::from_secs(10)).expect("a notification within the timeout")
}

#[test]
fn clients_keep_their_ids_and_stream_across_a_takeover_and_systemd_follows_the_main_pid() {
    let dir = scratch("ok");
    let binary = own_binary(&dir);
    let pid_file = dir.join("pid");
    let _reaper = Reaper(pid_file.clone());
    let notify = systemd(&dir.join("notify"));
    let mut command = Command::new(&binary);
    command.env("NOTIFY_SOCKET", dir.join("notify"));
    let mut relay = Relay::spawn(command, &["--pid-file", pid_file.to_str().unwrap()]);
    let old = relay.child.id();
    assert_eq!(notification(&notify), format!("MAINPID={old}\nREADY=1\n"));
    assert_eq!(notification(&notify), "BARRIER=1");

    let mut a = relay.ws(ROOM);
    assert_eq!(text(&mut a), "1 self");
    let mut b = relay.ws(ROOM);
    assert_eq!(texts(&mut b, 2), ["2 self", "1 join"]);
    assert_eq!(text(&mut a), "2 join");
    send(&mut a, "* before");
    assert_eq!(text(&mut b), "1 before");
    // Half a frame before the takeover, the rest after: the new process
    // finishes what the old one started decoding.
    let mut half = common::Raw::connect(relay.addr);
    half.write(&ws_relay::client::upgrade_request(ROOM, "x"));
    assert_eq!(half.next(), ws_relay::client::Received::Http(101));
    let _ = (half.next(), half.next(), half.next());
    let _ = (text(&mut a), text(&mut b));
    let mut frame = Vec::new();
    ws_relay::client::masked_frame(&mut frame, true, ws_relay::client::OpCode::Text, b"* split", [1, 2, 3, 4]);
    half.write(&frame[..5]);

    let status = Command::new(&binary).args(["--takeover", &old.to_string()]).stderr(Stdio::null()).status().unwrap();
    assert!(status.success(), "--takeover reports success once the old process has gone");
    assert_eq!(relay.child.wait().unwrap().code(), Some(0), "the old process exits cleanly");
    let new = pid_in(&pid_file);
    assert_ne!(new, old);
    assert!(alive(new));
    assert_eq!(std::fs::read_link(format!("/proc/{new}/exe")).unwrap(), binary);
    assert_eq!(notification(&notify), format!("MAINPID={new}\nREADY=1\n"), "systemd is told the new main pid");
    assert_eq!(notification(&notify), "BARRIER=1");

    half.write(&frame[5..]);
    assert_eq!(texts(&mut a, 1), ["3 split"]);
    assert_eq!(texts(&mut b, 1), ["3 split"]);
    send(&mut b, "* after");
    assert_eq!(text(&mut a), "2 after", "the same ids, no join or quit, no close");
    let scrape = relay.scrape();
    assert_eq!(common::sample(&scrape, "ws_relay_takeovers_total"), 1.0);
    assert!(common::sample(&scrape, "process_start_time_seconds") > 1.7e9);
    assert_eq!(common::sample(&scrape, "ws_relay_clients"), 3.0);
}

#[test]
fn a_successor_that_cannot_take_the_state_leaves_the_relay_serving() {
    let dir = scratch("refused");
    let binary = own_binary(&dir);
    let real = dir.join("real-ws-relay");
    std::fs::copy(&binary, &real).unwrap();
    let pid_file = dir.join("pid");
    let _reaper = Reaper(pid_file.clone());
    let mut command = Command::new(&binary);
    command.env("WS_RELAY_THREADS", "2").stderr(Stdio::piped());
    let mut relay = Relay::spawn(command, &["--pid-file", pid_file.to_str().unwrap()]);
    let old = relay.child.id();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut stderr = relay.child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut buf = [0; 4096];
        while let Ok(n @ 1..) = std::io::Read::read(&mut stderr, &mut buf) {
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let failures = || log.lock().unwrap().matches("takeover failed, serving on").count();
    let mut a = relay.ws(ROOM);
    assert_eq!(text(&mut a), "1 self");
    let mut b = relay.ws(ROOM);
    assert_eq!(texts(&mut b, 2), ["2 self", "1 join"]);
    assert_eq!(text(&mut a), "2 join");

    // A successor configured with another number of shards refuses the
    // state; one that exits at once never says hello.
    let successors =
        [format!("#!/bin/sh\nWS_RELAY_THREADS=3 exec {} \"$@\"\n", real.display()), "#!/bin/sh\nexit 1\n".to_string()];
    for (i, script) in successors.iter().enumerate() {
        let tmp = dir.join("next");
        std::fs::write(&tmp, script).unwrap();
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, &binary).unwrap();
        Command::new("kill").args(["-USR2", &old.to_string()]).status().unwrap();
        // The relay serves on the whole time, and says why the takeover failed.
        let give_up = Instant::now() + Duration::from_secs(10);
        let mut n = 0;
        while failures() <= i {
            assert!(Instant::now() < give_up, "no failure logged:\n{}", log.lock().unwrap());
            send(&mut a, &format!("* {i}.{n}"));
            assert_eq!(text(&mut b), format!("1 {i}.{n}"));
            n += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(alive(old) && pid_in(&pid_file) == old, "the old relay is still the one serving");
    }
    send(&mut b, "* still here");
    assert_eq!(text(&mut a), "2 still here");
    assert_eq!(common::sample(&relay.scrape(), "ws_relay_takeovers_total"), 0.0);
    let log = log.lock().unwrap().clone();
    assert!(log.contains("2 shards handed over, 3 configured"), "{log}");
    assert!(log.contains("did not say hello"), "{log}");
}
