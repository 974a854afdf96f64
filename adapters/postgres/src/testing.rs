//! Throwaway PostgreSQL servers for tests (feature `testing`).
//!
//! [`PgServer::shared`] starts one server per test binary from the system's binaries
//! (`initdb` + `pg_ctl`, Debian's `postgresql-15`), in a temp folder, listening on a unix
//! socket in that folder and on a free loopback port, with `fsync=off`; [`TestDb`] is a
//! fresh database on it, dropped when the guard goes (a panicking test included). When
//! the process is root, the server runs as the `postgres` system user (PostgreSQL
//! refuses root), and the folder is theirs. A watchdog process stops the server and
//! removes the folder once the test process is gone, however it ends: statics are never
//! dropped, and a test binary may be killed.
//!
//! When the binaries are missing, every function here panics naming the packages to
//! install: a test that needs PostgreSQL fails, it never skips.

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where Debian's `postgresql-15` puts the server binaries.
const BIN_DIRS: [&str; 4] = [
    "/usr/lib/postgresql/15/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/17/bin",
    "/usr/lib/postgresql/14/bin",
];

/// The message of a test that cannot find PostgreSQL.
const MISSING: &str = "PostgreSQL server binaries (initdb, pg_ctl, psql) not found under /usr/lib/postgresql/*/bin: \
     install the Debian packages `postgresql` and `libpq-dev` (apt-get install postgresql libpq-dev)";

/// The account read, for plan checks.
pub use crate::main_store::ACCOUNT_SQL;
pub use crate::profile_store::CURRENT_SQL;

static SHARED: OnceLock<PgServer> = OnceLock::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The folder of the PostgreSQL binaries; panics naming the packages when missing.
pub fn bin_dir() -> PathBuf {
    BIN_DIRS
        .iter()
        .map(PathBuf::from)
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file() && d.join("psql").is_file())
        .unwrap_or_else(|| panic!("{MISSING}"))
}

/// The `postgres` system user's uid and gid, when this process is root (and must drop to it).
fn run_as() -> Option<(u32, u32)> {
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX);
    if me != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let line = passwd.lines().find(|l| l.starts_with("postgres:")).unwrap_or_else(|| {
        panic!("running as root, but there is no `postgres` system user to run PostgreSQL as: {MISSING}")
    });
    let f: Vec<&str> = line.split(':').collect();
    Some((f[2].parse().expect("postgres uid"), f[3].parse().expect("postgres gid")))
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
    l.local_addr().expect("local addr").port()
}

/// A PostgreSQL server in a temp folder. Dropping an owned one (from [`PgServer::start`])
/// stops it and removes the folder; the shared one lives as long as the test process.
#[derive(Debug)]
pub struct PgServer {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
    user: Option<(u32, u32)>,
}

impl PgServer {
    /// The server of this test binary, started on first use.
    pub fn shared() -> &'static PgServer {
        SHARED.get_or_init(PgServer::start)
    }

    /// A server of its own (for tests that stop and start it).
    pub fn start() -> PgServer {
        let bin = bin_dir();
        let user = run_as();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        // Short: the socket path (folder + "/.s.PGSQL.PORT") must fit in 107 bytes.
        let dir = std::env::temp_dir().join(format!("pgt-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the PostgreSQL temp folder");
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("hand the temp folder to postgres");
        }
        let server = PgServer { dir, port: free_port(), bin, user };
        server.watchdog();
        let data = server.data_dir();
        server.run_checked(
            server.cmd("initdb").args(["-D"]).arg(&data).args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
                "--no-instructions",
            ]),
            "initdb",
        );
        // Unix sockets and the loopback port trust the `postgres` superuser; any other
        // role on the port must give its password (for the refused-login tests).
        let hba = "local all all trust\n\
                   host all postgres 127.0.0.1/32 trust\n\
                   host all all 127.0.0.1/32 scram-sha-256\n";
        std::fs::write(data.join("pg_hba.conf"), hba).expect("write pg_hba.conf");
        server.pg_start();
        server
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The folder holding the unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// The loopback TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A command running one of the server's binaries, as `postgres` when root.
    fn cmd(&self, name: &str) -> Command {
        let exe = self.bin.join(name);
        let mut c = if self.user.is_some() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        c.stdin(Stdio::null());
        c
    }

    fn run_checked(&self, cmd: &mut Command, what: &str) {
        let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {what}: {e}; {MISSING}"));
        assert!(
            out.status.success(),
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn pg_start(&self) {
        let opts = format!(
            "-k {} -p {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300 \
             -c shared_buffers=64MB",
            self.dir.display(),
            self.port
        );
        let log = self.dir.join("server.log");
        self.run_checked(
            self.cmd("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "-o"])
                .arg(opts)
                .arg("start"),
            "pg_ctl start",
        );
    }

    /// Stops the server (`fast`: sessions are cut off at once), leaving the data in place.
    pub fn stop(&self) {
        self.run_checked(
            self.cmd("pg_ctl").arg("-D").arg(self.data_dir()).args(["-w", "-m", "fast", "stop"]),
            "pg_ctl stop",
        );
    }

    /// Starts a stopped server again, on the same socket and port.
    pub fn restart(&self) {
        self.pg_start();
    }

    /// Spawns the process that cleans up once this test process is gone.
    // It outlives this process by design (it waits for it to end), so nobody waits on it.
    #[allow(clippy::zombie_processes)]
    fn watchdog(&self) {
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
             if [ -f {data}/postmaster.pid ]; then kill -QUIT $(head -1 {data}/postmaster.pid) 2>/dev/null; fi; \
             i=0; while [ -f {data}/postmaster.pid ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; \
             rm -rf {dir}",
            pid = std::process::id(),
            data = self.data_dir().display(),
            dir = self.dir.display(),
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the PostgreSQL watchdog");
    }

    /// A `psql` command running `sql` as the superuser on `db`, to spawn (e.g. to hold
    /// a lock while a test runs).
    pub fn psql_command(&self, db: &str, sql: &str) -> Command {
        let mut c = self.cmd("psql");
        c.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.dir)
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db, "-c", sql])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    /// Runs SQL as the superuser on `db` through `psql`; panics when it fails.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self
            .cmd("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.dir)
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db, "-c", sql])
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql failed on {db}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A URL for `db` over the unix socket, as the superuser.
    pub fn socket_url(&self, db: &str) -> String {
        format!("postgres://postgres@localhost:{}/{db}?host={}", self.port, self.dir.display())
    }

    /// A URL for `db` over the loopback port, as `user` with `password`.
    pub fn tcp_url(&self, db: &str, user: &str, password: Option<&str>) -> String {
        match password {
            Some(p) => format!("postgresql://{user}:{p}@127.0.0.1:{}/{db}", self.port),
            None => format!("postgresql://{user}@127.0.0.1:{}/{db}", self.port),
        }
    }

    /// A fresh, empty database on this server, dropped with the guard.
    pub fn database(&self) -> TestDb<'_> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("t{}_{n}", std::process::id());
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        TestDb { server: self, name }
    }

    /// Waits until the server answers (after [`PgServer::restart`]).
    pub fn wait_ready(&self, within: Duration) {
        let start = Instant::now();
        while start.elapsed() < within {
            let ok = self
                .cmd("pg_isready")
                .arg("-h")
                .arg(&self.dir)
                .args(["-p", &self.port.to_string()])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("PostgreSQL did not become ready in {within:?}");
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.data_dir().join("postmaster.pid").exists() {
            let _ = self
                .cmd("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-w", "-m", "immediate", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A database of its own for one test; dropped (connections and all) with the guard.
#[derive(Debug)]
pub struct TestDb<'a> {
    server: &'a PgServer,
    name: String,
}

impl TestDb<'_> {
    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its URL over the unix socket, as the superuser.
    pub fn url(&self) -> String {
        self.server.socket_url(&self.name)
    }

    /// Settings for a pool of one connection to this database, with `timeout` for
    /// statements and waits: a test of what becomes of a connection gets the same one on
    /// every call.
    pub fn one_connection(&self, timeout: Duration) -> crate::PgConfig {
        crate::PgConfig { url: self.url(), pool_size: 1, timeout, connect_timeout: Duration::from_secs(5) }
    }

    /// The server it lives on.
    pub fn server(&self) -> &PgServer {
        self.server
    }

    /// Runs SQL on it through `psql`; returns the unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        self.server.psql(&self.name, sql)
    }

    /// A `psql` command running `sql` on it, to spawn.
    pub fn psql_command(&self, sql: &str) -> Command {
        self.server.psql_command(&self.name, sql)
    }
}

impl Drop for TestDb<'_> {
    fn drop(&mut self) {
        // Best effort: a stopped server takes its databases with it anyway.
        let _ = self
            .server
            .cmd("psql")
            .args(["-X", "-q", "-h"])
            .arg(&self.server.dir)
            .args(["-p", &self.server.port.to_string(), "-U", "postgres", "-d", "postgres", "-c"])
            .arg(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
