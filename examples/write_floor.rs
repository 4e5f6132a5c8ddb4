//! The floor under any relay on this machine: the CPU cost of writing 200
//! bytes to a loopback TCP socket, one message per `write()` against eight
//! coalesced into one. A reader thread drains the other end.
//!
//! Run: `cargo run --release --example write_floor`

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

/// CPU seconds (user + system) of the calling thread.
fn thread_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("Linux /proc");
    let fields: Vec<&str> = stat.rsplit_once(')').expect("stat format").1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // USER_HZ is 100 on every mainstream Linux architecture.
    ticks / 100.0
}

fn measure(per_write: usize, messages: usize) -> (f64, f64) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0; 1 << 16];
        while s.read(&mut buf).map(|n| n > 0).unwrap_or(false) {}
    });
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let chunk = vec![b'x'; 200 * per_write];
    let (cpu, wall) = (thread_cpu(), Instant::now());
    for _ in 0..messages / per_write {
        s.write_all(&chunk).unwrap();
    }
    let result = ((thread_cpu() - cpu) * 1e6 / messages as f64, wall.elapsed().as_secs_f64() * 1e6 / messages as f64);
    drop(s);
    reader.join().unwrap();
    result
}

fn main() {
    let messages = 400_000;
    println!("loopback TCP, TCP_NODELAY, {messages} messages of 200 B");
    for per_write in [1, 8] {
        let (cpu, wall) = measure(per_write, messages);
        println!("{per_write} x 200 B per write(): {cpu:.2} µs CPU and {wall:.2} µs wall per 200 B message");
    }
}
