//! A throwaway `redis-server` for tests: a free loopback port, its own temporary data directory
//! (append-only file on, RDB snapshots off), killed and removed on drop.
//!
//! Std only, so other crates' tests can include this file with `#[path]` without depending on
//! this crate.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! let mut redis = tollgate_tests::redis::RedisServer::start()?;
//! let url = redis.url(); // redis://127.0.0.1:PORT/
//! redis.restart()?; // clean shutdown (AOF synced), same port, same data
//! # Ok(()) }
//! ```

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A running (or stopped, between [`RedisServer::stop`] and [`RedisServer::resume`]) server.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    binary: PathBuf,
}

const READY_TIMEOUT: Duration = Duration::from_secs(10);

impl RedisServer {
    /// Starts a server on a free 127.0.0.1 port with a fresh data directory, and waits until it
    /// answers `PING`. Fails with a message naming `make setup` when `redis-server` is missing.
    pub fn start() -> io::Result<Self> {
        let binary = find_binary()?;
        let dir = temp_dir()?;
        let mut last_err = None;
        // The port is free when chosen but could be taken before redis binds it: retry.
        for _ in 0..5 {
            let port = free_port()?;
            let mut server = RedisServer {
                child: None,
                port,
                dir: dir.clone(),
                binary: binary.clone(),
            };
            match server.resume() {
                Ok(()) => return Ok(server),
                Err(e) => {
                    // Keep the directory for the next try: forget it in this instance.
                    server.dir = PathBuf::new();
                    last_err = Some(e);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last_err.unwrap_or_else(|| io::Error::other("redis-server did not start")))
    }

    /// `redis://127.0.0.1:PORT/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory (kept across restarts, removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the server cleanly (`SHUTDOWN`: the append-only file is synced) and starts it again
    /// on the same port with the same data directory.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop()?;
        self.resume()
    }

    /// Stops the server cleanly; the data stays for [`RedisServer::resume`].
    pub fn stop(&mut self) -> io::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // Best effort: if the command cannot be sent, fall through to the kill below.
        let _ = send_command(self.port, "SHUTDOWN\r\n");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill()?;
        child.wait()?;
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "redis-server did not shut down within 10 s; killed",
        ))
    }

    /// Kills the server at once (SIGKILL: like a crash; writes of the last second may be lost).
    pub fn kill(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts the server again (after [`RedisServer::stop`] or [`RedisServer::kill`]) on the same
    /// port and data directory.
    pub fn resume(&mut self) -> io::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = self.dir.join("redis.log");
        let child = Command::new(&self.binary)
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"])
            .args(["--daemonize", "no", "--protected-mode", "yes"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot run {}: {e}; run `make setup`",
                        self.binary.display()
                    ),
                )
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                return Err(io::Error::other(format!(
                    "redis-server exited ({status}) on port {}: {}",
                    self.port,
                    log_tail(&log)
                )));
            }
            if send_command(self.port, "PING\r\n").is_ok_and(|r| r.starts_with("+PONG")) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.kill();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "redis-server not ready within {READY_TIMEOUT:?}: {}",
                        log_tail(&log)
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.kill();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn find_binary() -> io::Result<PathBuf> {
    find_binary_in(std::env::var_os("REDIS_SERVER"), std::env::var_os("PATH"))
}

fn find_binary_in(
    explicit: Option<std::ffi::OsString>,
    path: Option<std::ffi::OsString>,
) -> io::Result<PathBuf> {
    let not_found = |what: String| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{what}: run `make setup` (it installs redis-server)"),
        )
    };
    if let Some(p) = explicit {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(not_found(format!(
                "$REDIS_SERVER {} not found",
                p.display()
            )))
        };
    }
    path.map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
        .ok_or_else(|| not_found("redis-server not found on PATH, /usr/bin or /usr/sbin".into()))
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

fn temp_dir() -> io::Result<PathBuf> {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "tollgate-redis-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Sends one inline command and returns the first reply chunk.
fn send_command(port: u16, command: &str) -> io::Result<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(command.as_bytes())?;
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn get(port: u16, key: &str) -> String {
        send_command(port, &format!("GET {key}\r\n")).unwrap()
    }

    #[test]
    fn missing_binary_says_make_setup() {
        let err = find_binary_in(Some("/nonexistent/redis-server".into()), None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("run `make setup`"), "{err}");
        // PATH lookup (the fallbacks may find a real one: only check the message if not).
        if let Err(e) = find_binary_in(None, Some("/nonexistent".into())) {
            assert!(e.to_string().contains("run `make setup`"), "{e}");
        }
    }

    #[test]
    fn starts_persists_across_restart_and_cleans_up() {
        let mut r = RedisServer::start().expect("redis-server (run `make setup`)");
        assert!(r.url().ends_with(&format!(":{}/", r.port())));
        assert!(
            send_command(r.port(), "SET k v\r\n")
                .unwrap()
                .starts_with("+OK")
        );
        let port = r.port();
        r.restart().unwrap();
        assert_eq!(r.port(), port);
        assert_eq!(get(port, "k"), "$1\r\nv\r\n");
        let dir = r.dir().to_path_buf();
        assert!(dir.exists());
        drop(r);
        assert!(!dir.exists());
        assert!(send_command(port, "PING\r\n").is_err());
    }
}
