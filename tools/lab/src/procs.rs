//! The lab's child processes (nodes and attackers): started in their namespace by one
//! dedicated thread, so they die with the lab; logged to files; stopped in order.
//!
//! # Design
//! A child joins its namespace and asks for SIGKILL when its parent goes
//! (`PR_SET_PDEATHSIG`) before exec ([`firewall::netns::exec_in`]). The kernel sends that
//! signal when the *thread* that forked the child exits, so every child is forked by the
//! [`Spawner`]'s thread, which lives until the lab has stopped its children (never by a tokio
//! worker or blocking-pool thread, which come and go).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use tokio::sync::oneshot;

/// How often a waiting lab looks whether a child exited.
const POLL: Duration = Duration::from_millis(100);

/// A spawn request for the spawner thread.
struct Request {
    command: Command,
    reply: oneshot::Sender<std::io::Result<Child>>,
}

/// The thread that forks every child.
pub struct Spawner {
    requests: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
}

impl Spawner {
    /// Starts the thread (in the calling thread's network namespace).
    pub fn new() -> Result<Spawner> {
        let (requests, inbox) = mpsc::channel::<Request>();
        let thread = std::thread::Builder::new()
            .name("lab-spawner".into())
            .spawn(move || {
                for Request { mut command, reply } in inbox {
                    let _ = reply.send(command.spawn());
                }
            })
            .context("starting the spawner thread")?;
        Ok(Spawner {
            requests: Some(requests),
            thread: Some(thread),
        })
    }

    /// Starts `command` (already set to join its namespace) from the spawner thread.
    async fn spawn(&self, command: Command) -> Result<Child> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .as_ref()
            .ok_or_else(|| anyhow!("the spawner has stopped"))?
            .send(Request { command, reply })
            .map_err(|_| anyhow!("the spawner thread is gone"))?;
        Ok(answer
            .await
            .map_err(|_| anyhow!("the spawner thread is gone"))??)
    }

    /// Starts `program args` in namespace `ns` as the child called `name`: its standard error
    /// (and standard output, unless `separate_stdout`) to `<dir>/<name>.log`, its standard
    /// output otherwise to `<dir>/<name>.out`.
    pub async fn launch(
        &self,
        name: &str,
        ns: &str,
        dir: &Path,
        mut command: Command,
        separate_stdout: bool,
    ) -> Result<Proc> {
        let log = dir.join(format!("{name}.log"));
        // Appended to: a node started again keeps its earlier log.
        let err_file = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let (stdout, out) = if separate_stdout {
            let out = dir.join(format!("{name}.out"));
            let file = File::create(&out).with_context(|| format!("creating {}", out.display()))?;
            (file, Some(out))
        } else {
            (
                err_file.try_clone().context("duplicating the log file")?,
                None,
            )
        };
        command.stdin(Stdio::null()).stdout(stdout).stderr(err_file);
        firewall::netns::exec_in(&mut command, ns)?;
        let program = command.get_program().to_string_lossy().into_owned();
        let child = self
            .spawn(command)
            .await
            .with_context(|| format!("starting {name} ({program}) in {ns}"))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log,
            out,
        })
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop; its children get SIGKILL as it exits.
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A running child.
#[derive(Debug)]
pub struct Proc {
    /// Its name in the lab (`v0`, `udp-rate`, ...).
    pub name: String,
    /// The process.
    pub child: Child,
    /// Its log (standard error).
    pub log: PathBuf,
    /// Its standard output, when kept apart from the log.
    pub out: Option<PathBuf>,
}

impl Proc {
    /// Sends `signal`, unless it has exited (and been reaped).
    pub fn signal(&mut self, signal: libc::c_int) {
        if let Ok(None) = self.child.try_wait() {
            let Ok(pid) = libc::pid_t::try_from(self.child.id()) else {
                return;
            };
            // SAFETY: kill has no memory preconditions; the pid is our unreaped child.
            unsafe { libc::kill(pid, signal) };
        }
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `within` for it to exit.
    pub async fn wait(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; returns its exit status and whether it needed
    /// SIGKILL.
    pub async fn stop(&mut self, grace: Duration) -> (Option<ExitStatus>, bool) {
        self.signal(libc::SIGTERM);
        if let Some(status) = self.wait(grace).await {
            return (Some(status), false);
        }
        self.kill().await;
        (self.child.try_wait().ok().flatten(), true)
    }

    /// SIGKILL, and reaps it.
    pub async fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        self.wait(Duration::from_secs(5)).await;
    }

    /// Its standard output (or log), read back.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.out.as_ref().unwrap_or(&self.log)).unwrap_or_default()
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..]
            .iter()
            .map(|l| l.to_string())
            .collect()
    }
}
