//! A fault-injecting TCP relay for the end-to-end tests: it sits on `127.0.0.1:<free port>` in
//! front of a real upstream (the sandbox IdP or Dovecot) and, per connection, either passes the
//! bytes through or plays a scripted fault: nothing listening, a reset after the greeting or in
//! the middle of what the client sends (SASL), a server that trickles one byte at a time, a
//! stall (a TLS handshake that never starts), one-way latency, an oversize line, or a canned
//! HTTP answer (500, 429 with `Retry-After`, malformed JSON, an answer slower than the client's
//! timeout).
//!
//! With [`TlsTerminate`] the relay ends the client's TLS with the sandbox's own server
//! certificate (so the client verifies exactly what it verifies against Dovecot) and speaks TLS
//! to the upstream, so faults act on the protocol's lines (the SASL command, the greeting)
//! rather than on TLS records. Without it the relay is byte-transparent, which is what a WAN
//! emulation ([`Fault::Delay`]) wants.
//!
//! Everything is bounded: a connection lives at most [`FaultProxy::max_life`], an oversize line
//! has a given length, a canned answer is at most what it was given. Dropping the proxy shuts
//! its runtime down, which closes every socket; nothing outlives the test.
//!
//! A reset is a real TCP RST (`SO_LINGER` 0 then close), as a middlebox or a crashing server
//! sends it, not an orderly FIN.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// What the relay does with the next connections (each connection keeps the fault that was set
/// when it was accepted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Relay both ways, unchanged.
    Pass,
    /// Nothing listens on the port: connections are refused.
    Refuse,
    /// Relay the server's first `n` lines (`1`: the greeting), then reset the connection.
    ResetAfterServerLines(usize),
    /// Relay the client's bytes until `needle` (e.g. `AUTHENTICATE`) and `extra` bytes after it
    /// have passed, then reset: the connection dies in the middle of that command.
    ResetOnClient { needle: Vec<u8>, extra: usize },
    /// Relay the client's first `n` bytes, then reset.
    ResetAfterClientBytes(usize),
    /// The server's bytes reach the client one at a time, one per `every`.
    Trickle { every: Duration },
    /// The server's lines reach the client one per `every`: each line in time for a per-line
    /// timeout, the whole answer slow.
    SlowLines { every: Duration },
    /// Accept, read and drop what the client sends, never answer and never connect upstream
    /// (before TLS: a TLS handshake that stalls).
    Stall,
    /// One-way latency: each chunk is delivered `up` (client → server) or `down` (server →
    /// client) after it arrived, without limiting throughput.
    Delay { up: Duration, down: Duration },
    /// A wide-area link: `one_way` latency each way, and the TCP handshake's round trip charged
    /// too (the relay connects upstream only after `2 × one_way`, so the client's first bytes, or
    /// the server's greeting, arrive as late as over a real link with that latency).
    Wan { one_way: Duration },
    /// Instead of the server's greeting, `prefix` and then `len` bytes of `A` without a line end;
    /// then silence.
    Oversize { prefix: Vec<u8>, len: usize },
    /// HTTP: read the request, wait `after`, answer these bytes and close.
    Respond { after: Duration, bytes: Vec<u8> },
}

impl Fault {
    /// The server's greeting passes, then a reset.
    pub fn reset_after_greeting() -> Fault {
        Fault::ResetAfterServerLines(1)
    }

    /// A reset once the client has started sending `command` (e.g. `AUTHENTICATE`, `AUTH `):
    /// the command's first bytes reach the server, the rest never does.
    pub fn reset_mid_command(command: &str) -> Fault {
        Fault::ResetOnClient { needle: command.as_bytes().to_vec(), extra: 4 }
    }

    /// A whole HTTP/1.1 response with `Content-Length` and `Connection: close`.
    pub fn http(status: u16, reason: &str, headers: &[(&str, &str)], body: &str) -> Fault {
        let mut head = format!("HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        Fault::Respond { after: Duration::ZERO, bytes: [head.as_bytes(), body.as_bytes()].concat() }
    }

    /// The same response, `after` later.
    pub fn delayed(self, after: Duration) -> Fault {
        match self {
            Fault::Respond { bytes, .. } => Fault::Respond { after, bytes },
            other => other,
        }
    }
}

/// Counters over the proxy's life, for tests that wait for a connection or check that the
/// upstream was (not) reached.
#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    upstream: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    resets: AtomicU64,
    closed: AtomicU64,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections made to the upstream.
    pub upstream: u64,
    /// Bytes relayed client → server.
    pub bytes_up: u64,
    /// Bytes relayed server → client (or written by a fault).
    pub bytes_down: u64,
    /// Connections ended with a reset.
    pub resets: u64,
    /// Connections ended, whatever the way.
    pub closed: u64,
}

/// Terminates the client's TLS and speaks TLS to the upstream.
pub struct TlsTerminate {
    acceptor: tokio_rustls::TlsAcceptor,
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

impl std::fmt::Debug for TlsTerminate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTerminate").field("name", &self.name).finish_non_exhaustive()
    }
}

impl TlsTerminate {
    /// Presents `cert` with `key` (PEM) to the client; trusts `ca` (PEM) for the upstream, named
    /// `upstream_name` (an IP address or a DNS name).
    pub fn from_pem_files(cert: &Path, key: &Path, ca: &Path, upstream_name: &str) -> std::io::Result<TlsTerminate> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(cert).and_then(|i| i.collect()).map_err(invalid)?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(invalid)?;
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(invalid)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(invalid)?;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca).map_err(invalid)? {
            roots.add(c.map_err(invalid)?).map_err(invalid)?;
        }
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(invalid)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsTerminate {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
            name: ServerName::try_from(upstream_name.to_string()).map_err(invalid)?,
        })
    }
}

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

struct Shared {
    fault: Mutex<Fault>,
    upstream: SocketAddr,
    tls: Option<TlsTerminate>,
    counters: Counters,
    max_life: Duration,
}

/// The relay. Usable from plain `#[test]` functions: it runs on its own small runtime.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Mutex<Option<JoinHandle<()>>>,
    rt: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .field("fault", &self.fault())
            .finish_non_exhaustive()
    }
}

/// Longest a relayed connection lives, whatever the fault: a stalled or trickling connection
/// ends by itself even if the client never gives up.
pub const MAX_LIFE: Duration = Duration::from_secs(120);

impl FaultProxy {
    /// A byte-transparent relay to `upstream`, passing everything through.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        Self::start_with(upstream, None, MAX_LIFE)
    }

    /// A relay that terminates TLS on both sides (see [`TlsTerminate`]).
    pub fn start_tls(upstream: SocketAddr, tls: TlsTerminate) -> FaultProxy {
        Self::start_with(upstream, Some(tls), MAX_LIFE)
    }

    pub fn start_with(upstream: SocketAddr, tls: Option<TlsTerminate>, max_life: Duration) -> FaultProxy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fault-proxy")
            .enable_all()
            .build()
            .expect("fault proxy runtime");
        let shared =
            Arc::new(Shared { fault: Mutex::new(Fault::Pass), upstream, tls, counters: Counters::default(), max_life });
        let listener = {
            let _in_rt = rt.enter();
            listen("127.0.0.1:0".parse().expect("loopback")).expect("fault proxy listens on 127.0.0.1")
        };
        let addr = listener.local_addr().expect("local addr");
        let accept = rt.spawn(accept_loop(listener, shared.clone()));
        FaultProxy { addr, shared, accept: Mutex::new(Some(accept)), rt: Some(rt) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    pub fn max_life(&self) -> Duration {
        self.shared.max_life
    }

    pub fn fault(&self) -> Fault {
        self.shared.fault.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sets the fault for the connections accepted from now on. `Refuse` closes the listener
    /// before this returns; leaving `Refuse` listens again on the same port.
    pub fn set_fault(&self, fault: Fault) {
        let rt = self.rt.as_ref().expect("running");
        let refuse = fault == Fault::Refuse;
        *self.shared.fault.lock().unwrap_or_else(|p| p.into_inner()) = fault;
        let mut accept = self.accept.lock().unwrap_or_else(|p| p.into_inner());
        match (refuse, accept.take()) {
            (true, Some(task)) => {
                task.abort();
                // The aborted task drops the listener; wait for it so the port is closed now.
                let _ = rt.block_on(task);
            }
            (false, None) => {
                let _in_rt = rt.enter();
                let listener = listen(self.addr).expect("fault proxy listens again on its port");
                *accept = Some(rt.spawn(accept_loop(listener, self.shared.clone())));
            }
            (_, task) => *accept = task,
        }
    }

    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        Stats {
            accepted: c.accepted.load(Ordering::SeqCst),
            upstream: c.upstream.load(Ordering::SeqCst),
            bytes_up: c.bytes_up.load(Ordering::SeqCst),
            bytes_down: c.bytes_down.load(Ordering::SeqCst),
            resets: c.resets.load(Ordering::SeqCst),
            closed: c.closed.load(Ordering::SeqCst),
        }
    }

    /// Waits (polling, up to `within`) until `pred` holds for the stats; whether it did.
    pub fn wait_for(&self, within: Duration, pred: impl Fn(&Stats) -> bool) -> bool {
        let end = Instant::now() + within;
        loop {
            if pred(&self.stats()) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            // Cancels every task; their sockets close with them.
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// A listener with `SO_REUSEADDR`, so the port can be taken again right after `Refuse` even
/// while closed connections linger in TIME_WAIT.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = TcpSocket::new_v4()?;
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(256)
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let fault = shared.fault.lock().unwrap_or_else(|p| p.into_inner()).clone();
        shared.counters.accepted.fetch_add(1, Ordering::SeqCst);
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(shared.max_life, serve(&shared, client, fault)).await;
            shared.counters.closed.fetch_add(1, Ordering::SeqCst);
        });
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How one direction of a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The sender closed (or the receiver went away).
    Eof,
    /// The fault calls for a reset.
    Reset,
}

async fn serve(shared: &Shared, client: TcpStream, fault: Fault) -> std::io::Result<()> {
    // A second handle on the client's socket, to set SO_LINGER 0 for a reset after the stream
    // itself went into TLS. Setting it only then keeps ordinary closes orderly (a zero linger
    // would drop data still in flight).
    let ctl = TcpSocket::from_std_stream(client.as_ref_std_dup()?);
    let c = &shared.counters;
    if fault == Fault::Stall {
        let mut client = client;
        let mut sink = vec![0u8; 16 * 1024];
        while client.read(&mut sink).await? > 0 {}
        return Ok(());
    }
    let client: Box<dyn Io> = match &shared.tls {
        Some(t) => Box::new(t.acceptor.accept(client).await?),
        None => Box::new(client),
    };
    if let Fault::Respond { after, bytes } = fault {
        return respond(client, after, &bytes, c).await;
    }
    let fault = match fault {
        Fault::Wan { one_way } => {
            tokio::time::sleep(one_way * 2).await;
            Fault::Delay { up: one_way, down: one_way }
        }
        other => other,
    };
    let upstream = TcpStream::connect(shared.upstream).await?;
    c.upstream.fetch_add(1, Ordering::SeqCst);
    let upstream: Box<dyn Io> = match &shared.tls {
        Some(t) => Box::new(t.connector.connect(t.name.clone(), upstream).await?),
        None => Box::new(upstream),
    };
    let (cr, cw) = tokio::io::split(client);
    let (sr, sw) = tokio::io::split(upstream);
    let up = pump_up(cr, sw, fault.clone(), c);
    let down = pump_down(sr, cw, fault, c);
    tokio::pin!(up, down);
    // When one direction ends, the other gets a short grace to deliver what is in flight.
    const GRACE: Duration = Duration::from_secs(5);
    let end = tokio::select! {
        e = &mut up => if e == End::Reset { End::Reset } else {
            tokio::time::timeout(GRACE, &mut down).await.unwrap_or(End::Eof)
        },
        e = &mut down => if e == End::Reset { End::Reset } else {
            tokio::time::timeout(GRACE, &mut up).await.unwrap_or(End::Eof)
        },
    };
    if end == End::Reset {
        ctl.set_zero_linger()?;
        c.resets.fetch_add(1, Ordering::SeqCst);
        // Returning drops both streams and `ctl`: the last close of the socket sends the RST.
    }
    Ok(())
}

/// `TcpStream` → a duplicate of its socket as a std stream (same socket, another descriptor).
trait DupStd {
    fn as_ref_std_dup(&self) -> std::io::Result<std::net::TcpStream>;
}

impl DupStd for TcpStream {
    fn as_ref_std_dup(&self) -> std::io::Result<std::net::TcpStream> {
        use std::os::fd::AsFd;
        let fd = self.as_fd().try_clone_to_owned()?;
        Ok(std::net::TcpStream::from(fd))
    }
}

/// The canned HTTP answer: read the request head and its `Content-Length` body (bounded),
/// wait, answer, close.
async fn respond(mut client: Box<dyn Io>, after: Duration, bytes: &[u8], c: &Counters) -> std::io::Result<()> {
    const MAX_REQUEST: usize = 1024 * 1024;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 8 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = client.read(&mut chunk).await?;
        if n == 0 || buf.len() > MAX_REQUEST {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
        .min(MAX_REQUEST);
    while buf.len() < head_end + length {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    c.bytes_up.fetch_add(buf.len() as u64, Ordering::SeqCst);
    tokio::time::sleep(after).await;
    client.write_all(bytes).await?;
    c.bytes_down.fetch_add(bytes.len() as u64, Ordering::SeqCst);
    client.shutdown().await?;
    Ok(())
}

/// Client → server.
async fn pump_up(
    mut r: impl AsyncRead + Unpin + Send,
    mut w: impl AsyncWrite + Unpin + Send,
    fault: Fault,
    c: &Counters,
) -> End {
    if let Fault::Delay { up, .. } = fault {
        return pump_delayed(r, w, up, &c.bytes_up).await;
    }
    let mut sent = 0usize;
    // The last bytes relayed, so a needle split across reads is still found.
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        let (pass, reset) = match &fault {
            Fault::ResetAfterClientBytes(limit) => {
                let room = limit.saturating_sub(sent);
                (&chunk[..room.min(n)], n >= room)
            }
            Fault::ResetOnClient { needle, extra } => {
                let mut seen = tail.clone();
                seen.extend_from_slice(chunk);
                match seen.windows(needle.len()).position(|w| w == needle.as_slice()) {
                    Some(i) => {
                        let end_in_chunk = (i + needle.len()).saturating_sub(tail.len()) + extra;
                        (&chunk[..end_in_chunk.min(n)], true)
                    }
                    None => {
                        let keep = needle.len().saturating_sub(1).min(seen.len());
                        tail = seen[seen.len() - keep..].to_vec();
                        (chunk, false)
                    }
                }
            }
            _ => (chunk, false),
        };
        if w.write_all(pass).await.is_err() || w.flush().await.is_err() {
            return End::Eof;
        }
        sent += pass.len();
        c.bytes_up.fetch_add(pass.len() as u64, Ordering::SeqCst);
        if reset {
            return End::Reset;
        }
    }
    let _ = w.shutdown().await;
    End::Eof
}

/// Server → client.
async fn pump_down(
    mut r: impl AsyncRead + Unpin + Send,
    mut w: impl AsyncWrite + Unpin + Send,
    fault: Fault,
    c: &Counters,
) -> End {
    if let Fault::Oversize { prefix, len } = &fault {
        let block = vec![b'A'; 16 * 1024];
        if w.write_all(prefix).await.is_err() {
            return End::Eof;
        }
        let mut left = *len;
        while left > 0 {
            let n = left.min(block.len());
            if w.write_all(&block[..n]).await.is_err() {
                return End::Eof;
            }
            c.bytes_down.fetch_add(n as u64, Ordering::SeqCst);
            left -= n;
        }
        let _ = w.flush().await;
        // Then silence, until the client gives up (or the connection's life ends).
        std::future::pending::<()>().await;
    }
    if let Fault::Delay { down, .. } = fault {
        return pump_delayed(r, w, down, &c.bytes_down).await;
    }
    let mut lines = 0usize;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        match &fault {
            Fault::Trickle { every } => {
                for b in chunk {
                    if w.write_all(std::slice::from_ref(b)).await.is_err() || w.flush().await.is_err() {
                        return End::Eof;
                    }
                    c.bytes_down.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(*every).await;
                }
            }
            Fault::SlowLines { every } => {
                for line in chunk.split_inclusive(|b| *b == b'\n') {
                    if line.ends_with(b"\n") {
                        tokio::time::sleep(*every).await;
                    }
                    if w.write_all(line).await.is_err() || w.flush().await.is_err() {
                        return End::Eof;
                    }
                    c.bytes_down.fetch_add(line.len() as u64, Ordering::SeqCst);
                }
            }
            Fault::ResetAfterServerLines(limit) => {
                let mut end = n;
                let mut reset = false;
                for (i, b) in chunk.iter().enumerate() {
                    if *b == b'\n' {
                        lines += 1;
                        if lines >= *limit {
                            end = i + 1;
                            reset = true;
                            break;
                        }
                    }
                }
                if w.write_all(&chunk[..end]).await.is_err() || w.flush().await.is_err() {
                    return End::Eof;
                }
                c.bytes_down.fetch_add(end as u64, Ordering::SeqCst);
                if reset {
                    // Let the line reach the client before the reset overtakes it.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    return End::Reset;
                }
            }
            _ => {
                if w.write_all(chunk).await.is_err() || w.flush().await.is_err() {
                    return End::Eof;
                }
                c.bytes_down.fetch_add(n as u64, Ordering::SeqCst);
            }
        }
    }
    let _ = w.shutdown().await;
    End::Eof
}

/// One-way latency: each chunk is written `delay` after it was read, in order. Reading goes on
/// while earlier chunks wait (they queue, timestamped), so latency does not cap throughput.
async fn pump_delayed(
    mut r: impl AsyncRead + Unpin + Send,
    mut w: impl AsyncWrite + Unpin + Send,
    delay: Duration,
    bytes: &AtomicU64,
) -> End {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let read = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send((tokio::time::Instant::now() + delay, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
        // Dropping `tx` ends the writer once the queue is empty.
    };
    let write = async {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if w.write_all(&chunk).await.is_err() || w.flush().await.is_err() {
                return;
            }
            bytes.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        }
        let _ = w.shutdown().await;
    };
    tokio::join!(read, write);
    End::Eof
}

#[cfg(test)]
mod tests {
    //! The proxy against a small line server on loopback (std sockets, no sandbox needed).

    use super::*;
    use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
    use std::net::TcpListener as StdListener;
    use std::sync::mpsc;

    /// A server that greets with `* OK hello`, then echoes each line; every byte it receives
    /// goes to the returned channel. Its threads end when the test's sockets close.
    fn line_server() -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
        let l = StdListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let _ = s.write_all(b"* OK hello\r\n");
                    let mut r = BufReader::new(s.try_clone().unwrap());
                    loop {
                        let mut line = Vec::new();
                        match r.read_until(b'\n', &mut line) {
                            Ok(0) | Err(_) => {
                                let _ = tx.send(line);
                                return;
                            }
                            Ok(_) => {
                                let _ = tx.send(line.clone());
                                if s.write_all(&line).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        (addr, rx)
    }

    fn connect(p: &FaultProxy) -> std::net::TcpStream {
        let s = std::net::TcpStream::connect(p.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    fn read_line(s: &mut std::net::TcpStream) -> std::io::Result<String> {
        let mut out = Vec::new();
        let mut b = [0u8; 1];
        while !out.ends_with(b"\n") {
            if s.read(&mut b)? == 0 {
                break;
            }
            out.push(b[0]);
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn passes_both_ways_and_counts() {
        let (up, _rx) = line_server();
        let p = FaultProxy::start(up);
        let mut s = connect(&p);
        assert_eq!(read_line(&mut s).unwrap(), "* OK hello\r\n");
        s.write_all(b"a1 NOOP\r\n").unwrap();
        assert_eq!(read_line(&mut s).unwrap(), "a1 NOOP\r\n");
        // The counters move just after the bytes are written.
        assert!(p.wait_for(Duration::from_secs(5), |st| st.bytes_down == 21), "{:?}", p.stats());
        let st = p.stats();
        assert_eq!((st.accepted, st.upstream, st.bytes_up), (1, 1, 9), "{st:?}");
    }

    #[test]
    fn refuse_closes_the_port_and_pass_opens_it_again() {
        let (up, _rx) = line_server();
        let p = FaultProxy::start(up);
        p.set_fault(Fault::Refuse);
        let e = std::net::TcpStream::connect(p.addr()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
        p.set_fault(Fault::Pass);
        assert_eq!(read_line(&mut connect(&p)).unwrap(), "* OK hello\r\n");
    }

    #[test]
    fn reset_after_the_greeting_is_a_tcp_reset() {
        let (up, _rx) = line_server();
        let p = FaultProxy::start(up);
        p.set_fault(Fault::reset_after_greeting());
        let mut s = connect(&p);
        assert_eq!(read_line(&mut s).unwrap(), "* OK hello\r\n");
        let e = s.read(&mut [0u8; 16]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
        assert!(p.wait_for(Duration::from_secs(5), |st| st.resets == 1));
    }

    #[test]
    fn reset_mid_command_lets_only_the_start_of_the_command_through() {
        let (up, rx) = line_server();
        let p = FaultProxy::start(up);
        p.set_fault(Fault::reset_mid_command("AUTHENTICATE"));
        let mut s = connect(&p);
        read_line(&mut s).unwrap();
        s.write_all(b"a1 CAPABILITY\r\n").unwrap();
        assert_eq!(read_line(&mut s).unwrap(), "a1 CAPABILITY\r\n");
        // The needle split over two writes is still found.
        s.write_all(b"a2 AUTHENT").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        s.write_all(b"ICATE XOAUTH2 dXNlcj1hQGIuYwFhdXRoPUJlYXJlciB0b2tlbgEB\r\n").unwrap();
        let e = s.read(&mut [0u8; 16]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
        let got: Vec<Vec<u8>> = rx.iter().take(2).collect();
        assert_eq!(got[0], b"a1 CAPABILITY\r\n");
        assert_eq!(got[1], b"a2 AUTHENTICATE XOA", "the upstream saw only the command's start");
    }

    #[test]
    fn reset_after_client_bytes_counts_across_writes() {
        let (up, rx) = line_server();
        let p = FaultProxy::start(up);
        p.set_fault(Fault::ResetAfterClientBytes(12));
        let mut s = connect(&p);
        read_line(&mut s).unwrap();
        s.write_all(b"a1 NOOP\r\n").unwrap();
        assert_eq!(read_line(&mut s).unwrap(), "a1 NOOP\r\n");
        s.write_all(b"a2 NOOP\r\n").unwrap();
        let e = s.read(&mut [0u8; 16]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
        let got: Vec<Vec<u8>> = rx.iter().take(2).collect();
        assert_eq!(got, [b"a1 NOOP\r\n".to_vec(), b"a2 ".to_vec()]);
    }

    #[test]
    fn oversize_sends_the_prefix_and_the_length_then_nothing() {
        let (up, _rx) = line_server();
        let p = FaultProxy::start(up);
        p.set_fault(Fault::Oversize { prefix: b"* OK ".to_vec(), len: 300_000 });
        let mut s = connect(&p);
        let mut got = vec![0u8; 5 + 300_000];
        s.read_exact(&mut got).unwrap();
        assert!(got.starts_with(b"* OK AAAA") && got[5..].iter().all(|b| *b == b'A'));
        s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let e = s.read(&mut [0u8; 16]).unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{e}");
    }

    #[test]
    fn trickle_and_slow_lines_hold_the_servers_bytes_back() {
        let (up, _rx) = line_server();
        let p = FaultProxy::start(up);
        p.set_fault(Fault::Trickle { every: Duration::from_millis(200) });
        let mut s = connect(&p);
        let mut b = [0u8; 64];
        assert_eq!(s.read(&mut b).unwrap(), 1, "one byte at a time");
        p.set_fault(Fault::SlowLines { every: Duration::from_millis(300) });
        let mut s = connect(&p);
        let start = Instant::now();
        assert_eq!(read_line(&mut s).unwrap(), "* OK hello\r\n");
        assert!(start.elapsed() >= Duration::from_millis(300));
    }

    #[test]
    fn delay_adds_latency_each_way() {
        let (up, _rx) = line_server();
        let p = FaultProxy::start(up);
        p.set_fault(Fault::Delay { up: Duration::from_millis(150), down: Duration::from_millis(250) });
        let mut s = connect(&p);
        assert_eq!(read_line(&mut s).unwrap(), "* OK hello\r\n");
        let start = Instant::now();
        s.write_all(b"a1 NOOP\r\n").unwrap();
        assert_eq!(read_line(&mut s).unwrap(), "a1 NOOP\r\n");
        let rtt = start.elapsed();
        assert!(rtt >= Duration::from_millis(400) && rtt < Duration::from_secs(10), "{rtt:?}");
    }

    #[test]
    fn wan_charges_the_connect_round_trip_then_latency_each_way() {
        let (up, _rx) = line_server();
        let p = FaultProxy::start(up);
        p.set_fault(Fault::Wan { one_way: Duration::from_millis(100) });
        let start = Instant::now();
        let mut s = connect(&p);
        // The greeting comes a round trip (the handshake) plus one way after connecting.
        assert_eq!(read_line(&mut s).unwrap(), "* OK hello\r\n");
        let greeting = start.elapsed();
        assert!(greeting >= Duration::from_millis(300) && greeting < Duration::from_secs(10), "{greeting:?}");
        let start = Instant::now();
        s.write_all(b"a1 NOOP\r\n").unwrap();
        assert_eq!(read_line(&mut s).unwrap(), "a1 NOOP\r\n");
        let rtt = start.elapsed();
        assert!(rtt >= Duration::from_millis(200) && rtt < Duration::from_secs(10), "{rtt:?}");
    }

    #[test]
    fn stall_and_canned_http_answers_never_reach_the_upstream() {
        let (up, _rx) = line_server();
        let p = FaultProxy::start(up);
        p.set_fault(Fault::Stall);
        let mut s = connect(&p);
        s.write_all(b"\x16\x03\x01 a client hello").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let e = s.read(&mut [0u8; 16]).unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{e}");

        p.set_fault(Fault::http(429, "Too Many Requests", &[("Retry-After", "120")], "slow down"));
        let mut s = connect(&p);
        s.write_all(b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        s.write_all(b"cd").unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 429 Too Many Requests\r\n"), "{answer}");
        assert!(answer.contains("\r\nRetry-After: 120\r\n") && answer.ends_with("\r\n\r\nslow down"), "{answer}");
        assert_eq!(p.stats().upstream, 0);
    }

    #[test]
    fn dropping_the_proxy_closes_its_port_and_connections() {
        let (up, _rx) = line_server();
        let p = FaultProxy::start(up);
        p.set_fault(Fault::Stall);
        let mut s = connect(&p);
        let addr = p.addr();
        drop(p);
        let n = s.read(&mut [0u8; 16]);
        assert!(matches!(n, Ok(0)) || n.is_err(), "{n:?}");
        assert!(std::net::TcpStream::connect(addr).is_err());
    }
}
