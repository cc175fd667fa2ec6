//! The L4 load tool `benches/l4.sh` drives (real sockets, one thread):
//!
//!   l4load echo-tcp ADDR                 a TCP echo upstream
//!   l4load echo-udp ADDR                 a UDP echo upstream
//!   l4load conn ADDR SECONDS CONCURRENCY new connections: connect, 1 byte there and back, close
//!   l4load udp ADDR SECONDS CONCURRENCY  UDP request/response, one socket per client
//!
//! The two load modes print `operations ops_per_second p99_ms errors`.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let addr: SocketAddr = match arg(1).parse() {
        Ok(a) => a,
        Err(_) => {
            // `cargo bench` runs every bench target with its own flags; nothing to do then.
            eprintln!("usage: l4load echo-tcp|echo-udp|conn|udp ADDR [SECONDS CONCURRENCY]");
            return;
        }
    };
    let secs: u64 = arg(2).parse().unwrap_or(10);
    let conc: usize = arg(3).parse().unwrap_or(50);
    runtime.block_on(async move {
        match arg(0) {
            "echo-tcp" => echo_tcp(addr).await,
            "echo-udp" => echo_udp(addr).await,
            "conn" => report(conn(addr, secs, conc).await),
            "udp" => report(udp(addr, secs, conc).await),
            other => eprintln!("unknown mode {other}"),
        }
    });
}

async fn echo_tcp(addr: SocketAddr) {
    let listener = TcpListener::bind(addr).await.expect("bind");
    while let Ok((mut s, _)) = listener.accept().await {
        tokio::spawn(async move {
            let _ = s.set_nodelay(true);
            let mut buf = [0u8; 16 * 1024];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
    }
}

async fn echo_udp(addr: SocketAddr) {
    let socket = UdpSocket::bind(addr).await.expect("bind");
    let mut buf = [0u8; 65536];
    while let Ok((n, from)) = socket.recv_from(&mut buf).await {
        let _ = socket.send_to(&buf[..n], from).await;
    }
}

type Outcome = (Vec<Duration>, u64, Duration);

fn report((mut latencies, errors, elapsed): Outcome) {
    latencies.sort();
    let n = latencies.len();
    let p99 = latencies
        .get((n as f64 * 0.99) as usize)
        .copied()
        .unwrap_or_default();
    println!(
        "{n} {:.0} {:.3} {errors}",
        n as f64 / elapsed.as_secs_f64(),
        p99.as_secs_f64() * 1000.0
    );
}

async fn conn(addr: SocketAddr, secs: u64, conc: usize) -> Outcome {
    let end = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let tasks: Vec<_> = (0..conc)
        .map(|_| {
            tokio::spawn(async move {
                let (mut lat, mut errors) = (Vec::new(), 0u64);
                while Instant::now() < end {
                    let t = Instant::now();
                    let ok = async {
                        let mut s = TcpStream::connect(addr).await?;
                        s.set_nodelay(true)?;
                        s.write_all(b"x").await?;
                        let mut b = [0u8; 1];
                        s.read_exact(&mut b).await?;
                        Ok::<_, std::io::Error>(())
                    }
                    .await;
                    match ok {
                        Ok(()) => lat.push(t.elapsed()),
                        Err(_) => errors += 1,
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    collect(tasks, start).await
}

async fn udp(addr: SocketAddr, secs: u64, conc: usize) -> Outcome {
    let end = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let tasks: Vec<_> = (0..conc)
        .map(|_| {
            tokio::spawn(async move {
                let (mut lat, mut errors) = (Vec::new(), 0u64);
                let Ok(socket) = UdpSocket::bind("127.0.0.1:0").await else {
                    return (lat, 1);
                };
                if socket.connect(addr).await.is_err() {
                    return (lat, 1);
                }
                let mut buf = [0u8; 64];
                while Instant::now() < end {
                    let t = Instant::now();
                    if socket.send(&[7u8; 32]).await.is_err() {
                        errors += 1;
                        continue;
                    }
                    match tokio::time::timeout(Duration::from_millis(200), socket.recv(&mut buf))
                        .await
                    {
                        Ok(Ok(_)) => lat.push(t.elapsed()),
                        _ => errors += 1,
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    collect(tasks, start).await
}

async fn collect(
    tasks: Vec<tokio::task::JoinHandle<(Vec<Duration>, u64)>>,
    start: Instant,
) -> Outcome {
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((lat, e)) = t.await {
            all.extend(lat);
            errors += e;
        }
    }
    (all, errors, start.elapsed())
}
