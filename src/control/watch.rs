//! The certificate and configuration watcher of the control thread: it notices when the
//! configuration file, a certificate, key or CA bundle it names, a credential
//! directory under `--secrets-dir` or the `--session-ticket-keys` file changes, and tells the control thread, which then
//! reloads exactly as on SIGHUP. It sits beside the request path, never on it: the
//! shards only ever see the snapshot the reload builds.
//!
//! # What is watched, and why
//!
//! [`watched_paths`] lists the files and credential directories one configuration
//! depends on. The watcher never trusts an inotify watch on a file's own inode,
//! because the usual ways of updating a certificate replace the file rather than write
//! into it: editors and `mv` rename a new file over the old one, and kubelet updates a
//! mounted Secret by writing a fresh timestamped directory and renaming a `..data_tmp`
//! symlink over `..data`, so that `tls.crt -> ..data/tls.crt` resolves somewhere new
//! while `tls.crt` itself never changes. Instead, for every watched path the watcher
//! watches the directories where such a replacement shows up:
//!
//! - the path's parent directory (the nearest one that exists, so that a credential
//!   directory or a file that does not exist yet is noticed when it appears);
//! - the path itself when it is a directory (a `--secrets-dir` credential);
//! - the directory of each symlink on the way to the real file, and of the real file
//!   (certbot's `live/` → `archive/` layout, ConfigMap and Secret mounts).
//!
//! Any event in one of those directories — including events for unrelated files there
//! — only makes the watcher look again: after [`DEBOUNCE`] without further events it
//! recomputes a fingerprint of every watched path (the resolved target,
//! device, inode, size, modification and change times, following symlinks; for a
//! directory the same for each entry) and calls `on_change` only when a fingerprint
//! differs from the one seen at the previous call. So touching a neighbour does
//! nothing, a burst of writes gives one call, and a symlink swap is a change exactly
//! when it makes a watched name resolve to different content. The set of watched
//! directories is recomputed at the same time, since a swap moves the real files.
//!
//! When inotify cannot be used — no inotify instance or watch left
//! (`fs.inotify.max_user_instances`, `max_user_watches`), or a filesystem that refuses
//! watches — the watcher falls back to recomputing the fingerprints every
//! [`POLL_INTERVAL`], and [`Watcher::mode`] says so for the start-up log.
//!
//! The watcher only reports: a certificate and its key written a moment apart may
//! produce a report while only one of them is new. The control thread's reload
//! validates the whole new snapshot (each key against its certificate) and keeps the
//! old one on error, and the arrival of the second file is another change, so the
//! next reload succeeds.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use inotify::{Inotify, WatchDescriptor, WatchMask, Watches};

use crate::config::{ClientCredential, Config, Credential};

/// Quiet time after the last filesystem event before the watched paths are compared
/// again: long enough to let a burst of writes (or kubelet's several renames) finish.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(250);

/// The longest a report waits while events keep arriving, so a file that is written
/// continuously cannot postpone a reload forever.
pub(crate) const MAX_DEBOUNCE: Duration = Duration::from_secs(2);

/// How often the watched paths are compared when inotify cannot be used.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// [`Watcher::mode`] in polling mode; keep in step with [`POLL_INTERVAL`].
const POLLING_MODE: &str = "polling every 2s";

/// How long dropping a [`Watcher`] waits for its thread to finish before leaving it.
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the watcher thread sleeps when nothing is pending (it wakes earlier for
/// any event or command); a bound, not a poll.
const IDLE_WAIT: Duration = Duration::from_secs(3600);

/// Symlinks followed when looking for the directories a path's target lives in (the
/// kernel's own limit for one path lookup).
const MAX_SYMLINKS: usize = 40;

/// Changed paths named in one report; more are counted.
const MAX_NAMED_CHANGES: usize = 5;

/// Size of the inotify read buffer: many events of the longest name (`NAME_MAX`).
const EVENT_BUFFER: usize = 16 * 1024;

/// Events that can mean a watched name now resolves to something else.
fn watch_mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MODIFY
        | WatchMask::CLOSE_WRITE
        | WatchMask::ATTRIB
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
}

/// What to watch for one configuration: the configuration file; the
/// `--session-ticket-keys` file (`ticket_keys`); every `serverCertificate`,
/// `privateKey` and `caCertificates` file, and a DestinationRule `tls`'s files; and
/// for each `credentialName` (with a secrets directory) the directories `DIR/NAME` and
/// `DIR/NAME-cacert`, which may not exist yet. Each path appears once, in the order the configuration names it.
pub(crate) fn watched_paths(
    config: &Config,
    config_path: &Path,
    secrets_dir: Option<&Path>,
    ticket_keys: Option<&Path>,
) -> Vec<PathBuf> {
    let mut paths = vec![config_path.to_path_buf()];
    paths.extend(ticket_keys.map(Path::to_path_buf));
    let servers = config.gateways.iter().flat_map(|g| &g.servers);
    for tls in servers.filter_map(|s| s.tls.as_ref()) {
        match (&tls.credential, secrets_dir) {
            (Credential::Files { cert, key }, _) => {
                paths.push(cert.clone());
                paths.push(key.clone());
            }
            (Credential::Named(name), Some(dir)) => {
                paths.push(dir.join(name));
                paths.push(dir.join(format!("{name}-cacert")));
            }
            (Credential::Named(_), None) => {}
        }
        if let Some(ca) = &tls.ca_certificates {
            paths.push(ca.clone());
        }
    }
    upstream_tls_paths(config, secrets_dir, &mut paths);
    let mut seen = BTreeSet::new();
    paths.retain(|p| seen.insert(p.clone()));
    paths
}

/// The files and credential directories of every DestinationRule `tls` (top level
/// and per port): client certificate, key, CA and CRL files, `DIR/NAME` and
/// `DIR/NAME-cacert`.
fn upstream_tls_paths(config: &Config, secrets_dir: Option<&Path>, paths: &mut Vec<PathBuf>) {
    let policies = config.destination_rules.iter().flat_map(|dr| {
        std::iter::once(&dr.traffic_policy).chain(dr.port_level_settings.iter().map(|p| &p.policy))
    });
    for tls in policies.filter_map(|p| p.tls.as_ref()) {
        match (&tls.credential, secrets_dir) {
            (ClientCredential::Files { cert_and_key, ca }, _) => {
                if let Some((cert, key)) = cert_and_key {
                    paths.push(cert.clone());
                    paths.push(key.clone());
                }
                paths.extend(ca.iter().cloned());
            }
            (ClientCredential::Named(name), Some(dir)) => {
                paths.push(dir.join(name));
                paths.push(dir.join(format!("{name}-cacert")));
            }
            (ClientCredential::Named(_), None) => {}
        }
        paths.extend(tls.ca_crl.iter().cloned());
    }
}

/// Reports changes to a set of paths on its own thread; see the module doc.
pub(crate) struct Watcher {
    commands: Sender<Command>,
    /// Set once the watcher has fallen back to polling (at start or later).
    polling: Arc<AtomicBool>,
    /// Disconnected when the watcher thread has finished.
    finished: Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

enum Command {
    /// The new set, with each path's state when the caller looked (see
    /// [`Watcher::set_paths`]).
    SetPaths(Vec<PathBuf>, BTreeMap<PathBuf, PathState>),
    Stop,
    /// Behave as if inotify had just failed (no watches left).
    #[cfg(test)]
    FailInotify,
}

/// How the watcher learns that something may have changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    /// inotify, falling back to polling every [`POLL_INTERVAL`] when it cannot be used.
    Inotify,
    /// Polling only, at this interval (tests use a short one).
    #[cfg(test)]
    Polling(Duration),
}

impl Watcher {
    /// Starts a thread that calls `on_change` once per burst of changes to `paths`
    /// (after [`DEBOUNCE`] of quiet) with a description such as
    /// `changed: /etc/certs/tls.crt`. Uses inotify when it can and polling otherwise.
    pub(crate) fn spawn(
        paths: Vec<PathBuf>,
        on_change: impl Fn(String) + Send + 'static,
    ) -> io::Result<Watcher> {
        Watcher::start(paths, Backend::Inotify, on_change)
    }

    /// Like [`Watcher::spawn`], but compares every [`POLL_INTERVAL`] without trying
    /// inotify: what a host without inotify gets.
    #[cfg(test)]
    pub(crate) fn spawn_polling(
        paths: Vec<PathBuf>,
        on_change: impl Fn(String) + Send + 'static,
    ) -> io::Result<Watcher> {
        Watcher::start(paths, Backend::Polling(POLL_INTERVAL), on_change)
    }

    /// Replaces the watched set (after a reload the configuration may name other
    /// files). Paths in both sets keep the state last reported, so a change that
    /// happened during the reload is still reported.
    ///
    /// A path new to the set starts from its state now, in the caller's thread (right
    /// after the reload that named it, before anyone is told how it went): a file
    /// that a failed reload could not read and that appears a moment later is a
    /// change, even when the watcher thread takes the new set after it appeared.
    pub(crate) fn set_paths(&self, paths: Vec<PathBuf>) {
        let paths = normalize(paths);
        let states = fingerprints(&paths);
        // A send fails only when the thread has stopped; there is nothing to update.
        let _ = self.commands.send(Command::SetPaths(paths, states));
    }

    /// How changes are noticed, for the start-up log: `inotify` or
    /// `polling every 2s`.
    pub(crate) fn mode(&self) -> &'static str {
        if self.polling.load(Ordering::Relaxed) {
            POLLING_MODE
        } else {
            "inotify"
        }
    }

    fn start(
        paths: Vec<PathBuf>,
        backend: Backend,
        on_change: impl Fn(String) + Send + 'static,
    ) -> io::Result<Watcher> {
        let (commands, command_rx) = crossbeam_channel::unbounded();
        let (finished_tx, finished) = crossbeam_channel::bounded::<()>(0);
        let polling = Arc::new(AtomicBool::new(false));
        // Started here, so that `mode()` is right as soon as `spawn` returns.
        let source = match backend {
            #[cfg(test)]
            Backend::Polling(interval) => {
                polling.store(true, Ordering::Relaxed);
                Source::polling(interval)
            }
            Backend::Inotify => match InotifySource::start() {
                Ok(source) => Source::Inotify(source),
                Err(error) => {
                    tracing::warn!(
                        "cannot use inotify ({error}); watching certificates and the \
                         configuration by {POLLING_MODE}"
                    );
                    polling.store(true, Ordering::Relaxed);
                    Source::polling(POLL_INTERVAL)
                }
            },
        };
        let mut state = WatchState {
            paths: normalize(paths),
            reported: BTreeMap::new(),
            source,
            polling: polling.clone(),
            pending: None,
            on_change: Box::new(on_change),
        };
        state.reported = fingerprints(&state.paths);
        if let Source::Polling { seen, .. } = &mut state.source {
            seen.clone_from(&state.reported);
        }
        state.refresh_watches();
        let thread = std::thread::Builder::new()
            .name("ringress-watch".into())
            .spawn(move || {
                state.run(&command_rx);
                state.source.stop();
                drop(finished_tx);
            })?;
        Ok(Watcher {
            commands,
            polling,
            finished,
            thread: Some(thread),
        })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        // The thread drops its end of `finished` as its last act; only then is
        // joining sure not to block.
        match self.finished.recv_timeout(STOP_TIMEOUT) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                tracing::warn!("the certificate watcher did not stop in time; leaving it");
            }
            Ok(()) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                if let Some(thread) = self.thread.take() {
                    let _ = thread.join();
                }
            }
        }
    }
}

/// Absolute paths, so parents are never empty; paths are not resolved further, since
/// which symlinks they go through is part of what is watched.
fn normalize(paths: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut seen = BTreeSet::new();
    paths
        .into_iter()
        .map(|p| std::path::absolute(&p).unwrap_or(p))
        .filter(|p| seen.insert(p.clone()))
        .collect()
}

/// The watcher thread's state.
struct WatchState {
    paths: Vec<PathBuf>,
    /// The fingerprints at the last report (or at the start).
    reported: BTreeMap<PathBuf, PathState>,
    source: Source,
    polling: Arc<AtomicBool>,
    pending: Option<Pending>,
    on_change: Box<dyn Fn(String) + Send>,
}

/// Something may have changed: compare at `due`.
struct Pending {
    first: Instant,
    due: Instant,
}

impl WatchState {
    fn run(&mut self, commands: &Receiver<Command>) {
        loop {
            let now = Instant::now();
            let wake = [
                self.pending.as_ref().map(|p| p.due),
                self.source.next_poll(),
            ]
            .into_iter()
            .flatten()
            .min();
            let timeout = wake.map_or(IDLE_WAIT, |w| w.saturating_duration_since(now));
            let events = self.source.events();
            crossbeam_channel::select! {
                recv(commands) -> command => match command {
                    Ok(Command::SetPaths(paths, states)) => self.set_paths(paths, states),
                    Ok(Command::Stop) | Err(_) => return,
                    #[cfg(test)]
                    Ok(Command::FailInotify) => self.fall_back(&io::Error::other("test")),
                },
                recv(events) -> event => match event {
                    // The watches are brought up to date when the comparison is due,
                    // just before it: whatever changed before a new watch was added is
                    // in the comparison, whatever changes after raises an event.
                    Ok(ReaderEvent::Activity) => self.schedule(),
                    Ok(ReaderEvent::Failed(error)) => self.fall_back(&error),
                    // The reader stopped without saying why.
                    Err(_) => self.fall_back(&io::Error::other("the inotify reader stopped")),
                },
                default(timeout) => self.tick(),
            }
        }
    }

    /// Something happened: compare after [`DEBOUNCE`] of quiet, or [`MAX_DEBOUNCE`]
    /// after the first event at the latest.
    fn schedule(&mut self) {
        let now = Instant::now();
        let first = self.pending.as_ref().map_or(now, |p| p.first);
        let due = (now + DEBOUNCE).min(first + MAX_DEBOUNCE);
        self.pending = Some(Pending { first, due });
    }

    /// A timeout: a pending comparison is due, or a poll tick.
    fn tick(&mut self) {
        let now = Instant::now();
        if let Source::Polling {
            interval,
            next,
            seen,
        } = &mut self.source
            && *next <= now
        {
            *next = now + *interval;
            let current = fingerprints(&self.paths);
            if current != *seen {
                *seen = current;
                self.schedule();
            }
        }
        if self.pending.as_ref().is_some_and(|p| p.due <= now) {
            self.pending = None;
            self.refresh_watches();
            self.compare_and_report();
        }
    }

    fn compare_and_report(&mut self) {
        let current = fingerprints(&self.paths);
        let changed = describe_changes(&self.reported, &current);
        self.reported = current;
        if !changed.is_empty() {
            (self.on_change)(changed);
        }
    }

    fn set_paths(&mut self, paths: Vec<PathBuf>, mut states: BTreeMap<PathBuf, PathState>) {
        self.paths = paths;
        // Paths still watched keep their last reported state; new ones start from the
        // state the caller saw.
        let mut reported = std::mem::take(&mut self.reported);
        reported.retain(|p, _| self.paths.contains(p));
        for path in &self.paths {
            if !reported.contains_key(path) {
                let state = states.remove(path).unwrap_or_else(|| PathState::of(path));
                reported.insert(path.clone(), state);
            }
        }
        self.reported = reported;
        if let Source::Polling { seen, .. } = &mut self.source {
            *seen = fingerprints(&self.paths);
        }
        self.refresh_watches();
        // Anything that changed during the reload is reported after the usual delay.
        self.schedule();
    }

    fn refresh_watches(&mut self) {
        let Source::Inotify(inotify) = &mut self.source else {
            return;
        };
        if let Err(error) = inotify.watch(&directories_to_watch(&self.paths)) {
            self.fall_back(&error);
        }
    }

    /// Switches to polling for good, after inotify failed.
    fn fall_back(&mut self, error: &io::Error) {
        if matches!(self.source, Source::Polling { .. }) {
            return;
        }
        tracing::warn!(
            "inotify failed ({error}); watching certificates and the configuration by \
             {POLLING_MODE}"
        );
        std::mem::replace(&mut self.source, Source::polling(POLL_INTERVAL)).stop();
        self.polling.store(true, Ordering::Relaxed);
        if let Source::Polling { seen, .. } = &mut self.source {
            *seen = fingerprints(&self.paths);
        }
        // Events may have been lost while inotify was failing.
        self.schedule();
    }
}

/// The directories whose events may mean that one of `paths` changed (see the module
/// doc), canonicalized so each directory is watched once.
fn directories_to_watch(paths: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut dirs = BTreeSet::new();
    for path in paths {
        if let Some(dir) = existing_ancestor(path.parent()) {
            dirs.insert(dir);
        }
        if std::fs::metadata(path).is_ok_and(|m| m.is_dir())
            && let Ok(dir) = std::fs::canonicalize(path)
        {
            dirs.insert(dir);
        }
        // Every link on the way to the target, and the target's own directory.
        let mut current = path.clone();
        for _ in 0..MAX_SYMLINKS {
            let Ok(target) = std::fs::read_link(&current) else {
                break;
            };
            current = match current.parent() {
                Some(parent) => parent.join(target),
                None => target,
            };
            if let Some(dir) = existing_ancestor(current.parent()) {
                dirs.insert(dir);
            }
        }
        if let Some(dir) = std::fs::canonicalize(path)
            .ok()
            .and_then(|p| existing_ancestor(p.parent()))
        {
            dirs.insert(dir);
        }
    }
    dirs
}

/// The nearest existing directory at or above `path`, canonicalized.
fn existing_ancestor(path: Option<&Path>) -> Option<PathBuf> {
    path?
        .ancestors()
        .filter(|a| !a.as_os_str().is_empty())
        .find_map(|a| std::fs::canonicalize(a).ok().filter(|c| c.is_dir()))
}

/// Where change signals come from.
enum Source {
    Inotify(InotifySource),
    Polling {
        interval: Duration,
        next: Instant,
        /// The fingerprints at the previous tick, to notice a change.
        seen: BTreeMap<PathBuf, PathState>,
    },
}

impl Source {
    fn polling(interval: Duration) -> Source {
        Source::Polling {
            interval,
            next: Instant::now() + interval,
            seen: BTreeMap::new(),
        }
    }

    fn next_poll(&self) -> Option<Instant> {
        match self {
            Source::Polling { next, .. } => Some(*next),
            Source::Inotify(_) => None,
        }
    }

    fn events(&self) -> Receiver<ReaderEvent> {
        match self {
            Source::Inotify(inotify) => inotify.events.clone(),
            Source::Polling { .. } => crossbeam_channel::never(),
        }
    }

    fn stop(self) {
        if let Source::Inotify(inotify) = self {
            inotify.stop();
        }
    }
}

/// What the inotify reader thread tells the watcher thread.
enum ReaderEvent {
    /// One or more events arrived (which ones does not matter: see the module doc).
    Activity,
    /// Reading failed; inotify is no longer usable.
    Failed(io::Error),
}

/// An inotify instance whose events a reader thread forwards (a blocking read, so an
/// idle watcher does not wake up), and the directory watches on it.
struct InotifySource {
    watches: Watches,
    current: BTreeMap<PathBuf, WatchDescriptor>,
    events: Receiver<ReaderEvent>,
    stopping: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    /// Disconnected when the reader thread has finished.
    reader_finished: Receiver<()>,
}

impl InotifySource {
    fn start() -> io::Result<InotifySource> {
        let inotify = Inotify::init()?;
        let watches = inotify.watches();
        let (tx, events) = crossbeam_channel::bounded(1);
        let stopping = Arc::new(AtomicBool::new(false));
        let reader_stopping = stopping.clone();
        let (finished_tx, reader_finished) = crossbeam_channel::bounded::<()>(0);
        let reader = std::thread::Builder::new()
            .name("ringress-inotify".into())
            .spawn(move || {
                read_events(inotify, &tx, &reader_stopping);
                drop(finished_tx);
            })?;
        Ok(InotifySource {
            watches,
            current: BTreeMap::new(),
            events,
            stopping,
            reader: Some(reader),
            reader_finished,
        })
    }

    /// Makes the watched directories exactly `dirs`. A directory that vanished in the
    /// meantime is skipped (its parent's watch reports the change); any other failure
    /// (no watches left, a filesystem without inotify) means inotify cannot be used.
    fn watch(&mut self, dirs: &BTreeSet<PathBuf>) -> io::Result<()> {
        let stale: Vec<PathBuf> = self
            .current
            .keys()
            .filter(|d| !dirs.contains(*d))
            .cloned()
            .collect();
        for dir in stale {
            if let Some(wd) = self.current.remove(&dir)
                && !self.current.values().any(|other| *other == wd)
            {
                // Fails when the kernel already dropped the watch (directory deleted).
                let _ = self.watches.remove(wd);
            }
        }
        for dir in dirs {
            if self.current.contains_key(dir) {
                continue;
            }
            match self.watches.add(dir, watch_mask()) {
                Ok(wd) => {
                    self.current.insert(dir.clone(), wd);
                }
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                    ) => {}
                Err(error) => {
                    return Err(io::Error::new(
                        error.kind(),
                        format!("cannot watch {}: {error}", dir.display()),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Stops the reader thread: removing a watch queues an `IN_IGNORED` event, which
    /// ends its blocking read; it then sees `stopping` and returns.
    fn stop(mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Ok(wd) = self.watches.add("/", WatchMask::DELETE_SELF) {
            let _ = self.watches.remove(wd);
        }
        for (_, wd) in std::mem::take(&mut self.current) {
            let _ = self.watches.remove(wd);
        }
        // Unblocks a reader waiting to hand over an event.
        drop(self.events);
        if let Err(crossbeam_channel::RecvTimeoutError::Disconnected) =
            self.reader_finished.recv_timeout(STOP_TIMEOUT / 2)
            && let Some(reader) = self.reader.take()
        {
            let _ = reader.join();
        }
    }
}

fn read_events(mut inotify: Inotify, events: &Sender<ReaderEvent>, stopping: &AtomicBool) {
    let mut buffer = vec![0u8; EVENT_BUFFER];
    loop {
        let result = inotify.read_events_blocking(&mut buffer).map(|e| e.count());
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let event = match result {
            Ok(0) => continue,
            Ok(_) => ReaderEvent::Activity,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => ReaderEvent::Failed(error),
        };
        let failed = matches!(event, ReaderEvent::Failed(_));
        // The channel holds one event: activity already queued says it all.
        match events.try_send(event) {
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => return,
            Err(crossbeam_channel::TrySendError::Full(ReaderEvent::Failed(error))) => {
                let _ = events.send(ReaderEvent::Failed(error));
            }
            Ok(()) | Err(crossbeam_channel::TrySendError::Full(_)) => {}
        }
        if failed {
            return;
        }
    }
}

/// What a watched path resolves to, following symlinks: what decides whether it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PathState {
    Missing,
    /// It exists but cannot be examined (permissions...): the error kind.
    Unreadable(io::ErrorKind),
    File(Stamp),
    /// A directory and the stamp of each entry (`None`: a dangling symlink or an entry
    /// that vanished while being read).
    Dir(Stamp, BTreeMap<OsString, Option<Stamp>>),
}

/// Identity and version of one file or directory, after following symlinks.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    target: Option<PathBuf>,
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(path: &Path) -> io::Result<(Stamp, bool)> {
        let meta = std::fs::metadata(path)?;
        let stamp = Stamp {
            target: std::fs::canonicalize(path).ok(),
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        };
        Ok((stamp, meta.is_dir()))
    }
}

impl PathState {
    fn of(path: &Path) -> PathState {
        match Stamp::of(path) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => PathState::Missing,
            Err(error) => PathState::Unreadable(error.kind()),
            Ok((stamp, false)) => PathState::File(stamp),
            Ok((stamp, true)) => {
                // The directory's own times change with every file created and removed
                // in it (editor swap files, kubelet's `..data_tmp`); only its identity
                // and its entries matter.
                let stamp = Stamp {
                    size: 0,
                    mtime: (0, 0),
                    ctime: (0, 0),
                    ..stamp
                };
                let entries = match std::fs::read_dir(path) {
                    Ok(entries) => entries,
                    Err(error) => return PathState::Unreadable(error.kind()),
                };
                let entries = entries
                    .filter_map(Result::ok)
                    .map(|entry| {
                        let stamp = Stamp::of(&entry.path()).ok().map(|(s, _)| s);
                        (entry.file_name(), stamp)
                    })
                    .collect();
                PathState::Dir(stamp, entries)
            }
        }
    }
}

fn fingerprints(paths: &[PathBuf]) -> BTreeMap<PathBuf, PathState> {
    paths
        .iter()
        .map(|p| (p.clone(), PathState::of(p)))
        .collect()
}

/// `changed: /a, /b` for what differs between two fingerprint sets; empty when
/// nothing does. In a directory, the entries that changed are named; kubelet's
/// `..data` bookkeeping entries only when nothing else changed.
fn describe_changes(
    before: &BTreeMap<PathBuf, PathState>,
    after: &BTreeMap<PathBuf, PathState>,
) -> String {
    let mut changed: Vec<PathBuf> = Vec::new();
    for (path, state) in after {
        let old = before.get(path);
        if old == Some(state) {
            continue;
        }
        match (old, state) {
            (Some(PathState::Dir(_, old)), PathState::Dir(_, new)) => {
                let names: BTreeSet<&OsString> = old.keys().chain(new.keys()).collect();
                let differing: Vec<&OsString> = names
                    .into_iter()
                    .filter(|n| old.get(*n) != new.get(*n))
                    .collect();
                let visible: Vec<&&OsString> = differing
                    .iter()
                    .filter(|n| !n.to_string_lossy().starts_with(".."))
                    .collect();
                if visible.is_empty() {
                    changed.push(path.clone());
                } else {
                    changed.extend(visible.into_iter().map(|n| path.join(n)));
                }
            }
            _ => changed.push(path.clone()),
        }
    }
    if changed.is_empty() {
        return String::new();
    }
    let mut text = String::from("changed: ");
    let named: Vec<String> = changed
        .iter()
        .take(MAX_NAMED_CHANGES)
        .map(|p| p.display().to_string())
        .collect();
    text.push_str(&named.join(", "));
    if changed.len() > MAX_NAMED_CHANGES {
        text.push_str(&format!(" and {} more", changed.len() - MAX_NAMED_CHANGES));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::sync::atomic::AtomicUsize;

    /// How long a change may take to be reported: generous, for a loaded machine.
    const FIRES_WITHIN: Duration = Duration::from_secs(5);
    /// How long to wait for a report that must not come.
    const QUIET_FOR: Duration = Duration::from_millis(900);
    /// The poll interval of the polling-mode tests.
    const TEST_POLL: Duration = Duration::from_millis(100);

    /// A scratch directory removed at the end of the test.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "ringress-watch-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            TempDir(std::fs::canonicalize(path).unwrap())
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
    }

    fn start(paths: Vec<PathBuf>, backend: Backend) -> (Watcher, Receiver<String>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let watcher = Watcher::start(paths, backend, move |what| {
            let _ = tx.send(what);
        })
        .unwrap();
        if backend == Backend::Inotify {
            assert_eq!(watcher.mode(), "inotify", "inotify is not usable here");
        }
        (watcher, rx)
    }

    fn expect_report(reports: &Receiver<String>) -> String {
        reports
            .recv_timeout(FIRES_WITHIN)
            .expect("a change was not reported")
    }

    fn expect_quiet(reports: &Receiver<String>) {
        if let Ok(report) = reports.recv_timeout(QUIET_FOR) {
            panic!("nothing changed, yet the watcher reported {report:?}");
        }
    }

    const BACKENDS: [Backend; 2] = [Backend::Inotify, Backend::Polling(TEST_POLL)];

    /// `DIR/NAME` laid out as kubelet mounts a Secret, with its data in `..{stamp}`.
    fn kubelet_secret(dir: &Path, stamp: &str, cert: &str) {
        std::fs::create_dir_all(dir).unwrap();
        let data = dir.join(format!("..{stamp}"));
        std::fs::create_dir(&data).unwrap();
        write(&data.join("tls.crt"), cert);
        write(&data.join("tls.key"), "key");
        symlink(format!("..{stamp}"), dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        for name in ["tls.crt", "tls.key"] {
            let link = dir.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                symlink(format!("..data/{name}"), link).unwrap();
            }
        }
    }

    /// Kubelet's update: a new timestamped directory, `..data` swapped by rename, the
    /// old directory removed.
    fn kubelet_update(dir: &Path, old: &str, new: &str, cert: &str) {
        kubelet_secret(dir, new, cert);
        std::fs::remove_dir_all(dir.join(format!("..{old}"))).unwrap();
    }

    #[test]
    fn rewriting_a_certificate_is_reported() {
        for backend in BACKENDS {
            let dir = TempDir::new();
            let cert = dir.path("tls.crt");
            write(&cert, "one");
            let (watcher, reports) = start(vec![cert.clone()], backend);
            write(&cert, "two, longer");
            let report = expect_report(&reports);
            assert_eq!(
                report,
                format!("changed: {}", cert.display()),
                "{backend:?}"
            );
            expect_quiet(&reports);
            if backend == Backend::Inotify {
                assert_eq!(watcher.mode(), "inotify", "fell back to polling");
            }
        }
    }

    #[test]
    fn replacing_a_certificate_by_rename_is_reported() {
        for backend in BACKENDS {
            let dir = TempDir::new();
            let cert = dir.path("tls.crt");
            write(&cert, "one");
            let (_watcher, reports) = start(vec![cert.clone()], backend);
            let staged = dir.path(".tls.crt.tmp");
            write(&staged, "two");
            std::fs::rename(&staged, &cert).unwrap();
            assert!(expect_report(&reports).contains("tls.crt"), "{backend:?}");
        }
    }

    #[test]
    fn a_kubelet_secret_update_is_reported() {
        for backend in BACKENDS {
            let dir = TempDir::new();
            let secrets = dir.path("secrets");
            let credential = secrets.join("gw-cert");
            kubelet_secret(&credential, "2026_11_22_01_00_00.123", "one");
            let paths = vec![credential.clone(), secrets.join("gw-cert-cacert")];
            let (_watcher, reports) = start(paths, backend);
            kubelet_update(
                &credential,
                "2026_11_22_01_00_00.123",
                "2026_11_22_01_05_00.456",
                "two",
            );
            let report = expect_report(&reports);
            assert!(report.contains("gw-cert/tls.crt"), "{backend:?}: {report}");
            expect_quiet(&reports);
        }
    }

    #[test]
    fn a_certificate_file_inside_a_kubelet_mount_is_followed() {
        for backend in BACKENDS {
            let dir = TempDir::new();
            let mount = dir.path("certs");
            kubelet_secret(&mount, "2026_11_22_01_00_00.123", "one");
            let paths = vec![mount.join("tls.crt"), mount.join("tls.key")];
            let (_watcher, reports) = start(paths, backend);
            kubelet_update(
                &mount,
                "2026_11_22_01_00_00.123",
                "2026_11_22_01_05_00.456",
                "two",
            );
            assert!(expect_report(&reports).contains("tls.crt"), "{backend:?}");
            // The watches moved to the new target: a second update is seen too.
            kubelet_update(
                &mount,
                "2026_11_22_01_05_00.456",
                "2026_11_22_01_10_00.789",
                "three",
            );
            assert!(expect_report(&reports).contains("tls.crt"), "{backend:?}");
        }
    }

    #[test]
    fn a_certificate_reached_through_symlinks_elsewhere_is_followed() {
        let dir = TempDir::new();
        std::fs::create_dir_all(dir.path("live")).unwrap();
        std::fs::create_dir_all(dir.path("archive")).unwrap();
        std::fs::create_dir_all(dir.path("etc")).unwrap();
        write(&dir.path("archive/cert1.pem"), "one");
        symlink("../archive/cert1.pem", dir.path("live/cert.pem")).unwrap();
        symlink(dir.path("live/cert.pem"), dir.path("etc/tls.crt")).unwrap();
        let (_watcher, reports) = start(vec![dir.path("etc/tls.crt")], Backend::Inotify);
        // Renewal: a new archive file, then the `live` link repointed by rename.
        write(&dir.path("archive/cert2.pem"), "two");
        symlink("../archive/cert2.pem", dir.path("live/cert.pem.new")).unwrap();
        std::fs::rename(dir.path("live/cert.pem.new"), dir.path("live/cert.pem")).unwrap();
        assert!(expect_report(&reports).contains("etc/tls.crt"));
        // And an in-place write to the real file.
        write(&dir.path("archive/cert2.pem"), "two, again");
        assert!(expect_report(&reports).contains("etc/tls.crt"));
    }

    #[test]
    fn a_file_created_and_removed_in_a_credential_directory_is_not_reported() {
        for backend in BACKENDS {
            let dir = TempDir::new();
            let credential = dir.path("gw-cert");
            std::fs::create_dir(&credential).unwrap();
            write(&credential.join("tls.crt"), "one");
            let (_watcher, reports) = start(vec![credential.clone()], backend);
            write(&credential.join(".tls.crt.swp"), "editor");
            std::fs::remove_file(credential.join(".tls.crt.swp")).unwrap();
            expect_quiet(&reports);
        }
    }

    #[test]
    fn a_directory_that_appears_later_is_reported() {
        for backend in BACKENDS {
            let dir = TempDir::new();
            let secrets = dir.path("secrets");
            std::fs::create_dir(&secrets).unwrap();
            let credential = secrets.join("gw-cert");
            let (_watcher, reports) = start(vec![credential.clone()], backend);
            std::fs::create_dir(&credential).unwrap();
            write(&credential.join("tls.crt"), "one");
            expect_report(&reports);
            // Now watched itself: a change inside is seen.
            write(&credential.join("tls.key"), "key");
            let report = expect_report(&reports);
            assert!(report.contains("gw-cert/tls.key"), "{backend:?}: {report}");
        }
    }

    #[test]
    fn a_file_under_a_missing_directory_is_reported_when_both_appear() {
        let dir = TempDir::new();
        let cert = dir.path("not/yet/tls.crt");
        let (_watcher, reports) = start(vec![cert.clone()], Backend::Inotify);
        std::fs::create_dir_all(dir.path("not/yet")).unwrap();
        expect_quiet(&reports);
        write(&cert, "one");
        assert!(expect_report(&reports).contains("tls.crt"));
    }

    #[test]
    fn touching_an_unrelated_file_is_not_reported() {
        for backend in BACKENDS {
            let dir = TempDir::new();
            let cert = dir.path("tls.crt");
            write(&cert, "one");
            let (_watcher, reports) = start(vec![cert.clone()], backend);
            write(&dir.path("notes.txt"), "unrelated");
            std::fs::rename(dir.path("notes.txt"), dir.path("notes.old")).unwrap();
            expect_quiet(&reports);
            // Reading the watched file is no change either.
            let _ = std::fs::read(&cert).unwrap();
            expect_quiet(&reports);
        }
    }

    #[test]
    fn a_burst_of_writes_is_reported_once() {
        for backend in BACKENDS {
            let dir = TempDir::new();
            let cert = dir.path("tls.crt");
            write(&cert, "0");
            let (_watcher, reports) = start(vec![cert.clone()], backend);
            for i in 1..=10 {
                write(&cert, &"x".repeat(i));
                std::thread::sleep(Duration::from_millis(5));
            }
            expect_report(&reports);
            let mut extra = 0;
            while reports.recv_timeout(QUIET_FOR).is_ok() {
                extra += 1;
            }
            assert!(
                extra <= 2,
                "{backend:?}: {} reports for one burst",
                extra + 1
            );
        }
    }

    #[test]
    fn a_key_written_after_its_certificate_is_reported_again() {
        let dir = TempDir::new();
        let (cert, key) = (dir.path("tls.crt"), dir.path("tls.key"));
        write(&cert, "cert one");
        write(&key, "key one");
        let (_watcher, reports) = start(vec![cert.clone(), key.clone()], Backend::Inotify);
        write(&cert, "cert two");
        assert!(expect_report(&reports).ends_with("tls.crt"));
        std::thread::sleep(DEBOUNCE * 2);
        write(&key, "key two");
        assert!(expect_report(&reports).ends_with("tls.key"));
    }

    #[test]
    fn set_paths_switches_what_is_watched() {
        for backend in BACKENDS {
            let dir = TempDir::new();
            let (old, new) = (dir.path("old.crt"), dir.path("new.crt"));
            std::fs::create_dir(dir.path("other")).unwrap();
            let elsewhere = dir.path("other/new.key");
            write(&old, "one");
            write(&new, "one");
            write(&elsewhere, "one");
            let (watcher, reports) = start(vec![old.clone()], backend);
            watcher.set_paths(vec![new.clone(), elsewhere.clone()]);
            expect_quiet(&reports);
            write(&old, "two, no longer watched");
            expect_quiet(&reports);
            write(&new, "two");
            assert!(expect_report(&reports).ends_with("new.crt"), "{backend:?}");
            write(&elsewhere, "two");
            assert!(expect_report(&reports).ends_with("new.key"), "{backend:?}");
        }
    }

    #[test]
    fn a_file_that_appears_before_the_thread_takes_the_new_set_is_reported() {
        for backend in BACKENDS {
            let dir = TempDir::new();
            let cert = dir.path("new/tls.crt");
            let (watcher, reports) = start(vec![dir.path("gateway.yaml")], backend);
            // The caller looked (a failed reload: no file yet), then the file came,
            // then the watcher thread takes the set.
            let paths = normalize(vec![cert.clone()]);
            let states = fingerprints(&paths);
            std::fs::create_dir(dir.path("new")).unwrap();
            write(&cert, "one");
            watcher
                .commands
                .send(Command::SetPaths(paths, states))
                .unwrap();
            assert!(expect_report(&reports).contains("tls.crt"), "{backend:?}");
        }
    }

    #[test]
    fn dropping_the_watcher_stops_its_thread() {
        for backend in BACKENDS {
            let dir = TempDir::new();
            let cert = dir.path("tls.crt");
            write(&cert, "one");
            let (watcher, reports) = start(vec![cert.clone()], backend);
            let started = Instant::now();
            drop(watcher);
            assert!(started.elapsed() < STOP_TIMEOUT, "{backend:?}");
            // The callback (and its sender) went away with the thread.
            write(&cert, "two");
            assert_eq!(
                reports.recv_timeout(FIRES_WITHIN),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected),
                "{backend:?}"
            );
        }
    }

    #[test]
    fn a_failing_inotify_falls_back_to_polling() {
        let dir = TempDir::new();
        let cert = dir.path("tls.crt");
        write(&cert, "one");
        let (watcher, reports) = start(vec![cert.clone()], Backend::Inotify);
        watcher.commands.send(Command::FailInotify).unwrap();
        let deadline = Instant::now() + FIRES_WITHIN;
        while watcher.mode() == "inotify" && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(watcher.mode(), "polling every 2s");
        expect_quiet(&reports);
        write(&cert, "two, longer");
        assert!(expect_report(&reports).ends_with("tls.crt"));
    }

    #[test]
    fn mode_names_the_backend() {
        let dir = TempDir::new();
        let watcher = Watcher::spawn_polling(vec![dir.path("a")], |_| {}).unwrap();
        assert_eq!(watcher.mode(), "polling every 2s");
        assert_eq!(
            POLL_INTERVAL,
            Duration::from_secs(2),
            "keep POLLING_MODE in step"
        );
        let watcher = Watcher::spawn(vec![dir.path("a")], |_| {}).unwrap();
        assert_eq!(watcher.mode(), "inotify");
    }

    #[test]
    fn watched_paths_lists_files_and_credential_directories() {
        let files = crate::config::load_str(
            include_str!("../config/testdata/secure-mutual.yaml"),
            Path::new("/etc/ringress/gateway.yaml"),
        )
        .unwrap();
        assert_eq!(
            watched_paths(
                &files,
                Path::new("/etc/ringress/gateway.yaml"),
                None,
                Some(Path::new("/etc/ringress/ticket-keys"))
            ),
            [
                "/etc/ringress/gateway.yaml",
                "/etc/ringress/ticket-keys",
                "/etc/ringress/certs/tls.crt",
                "/etc/ringress/certs/tls.key",
                "/etc/ringress/certs/ca-chain.cert.pem",
            ]
            .map(PathBuf::from)
        );
        let named = crate::config::load_str(
            include_str!("../config/testdata/sds-multi-host.yaml"),
            Path::new("gw.yaml"),
        )
        .unwrap();
        assert_eq!(
            watched_paths(
                &named,
                Path::new("gw.yaml"),
                Some(Path::new("/run/secrets")),
                None
            ),
            [
                "gw.yaml",
                "/run/secrets/httpbin-credential",
                "/run/secrets/httpbin-credential-cacert",
                "/run/secrets/helloworld-credential",
                "/run/secrets/helloworld-credential-cacert",
            ]
            .map(PathBuf::from)
        );
        assert_eq!(
            watched_paths(&named, Path::new("gw.yaml"), None, None),
            [PathBuf::from("gw.yaml")]
        );
    }

    #[test]
    fn changes_are_described_by_path_and_directory_entry() {
        let dir = TempDir::new();
        let credential = dir.path("gw-cert");
        std::fs::create_dir(&credential).unwrap();
        write(&credential.join("tls.crt"), "one");
        let paths = vec![credential.clone(), dir.path("missing")];
        let before = fingerprints(&paths);
        assert_eq!(describe_changes(&before, &fingerprints(&paths)), "");
        write(&credential.join("tls.crt"), "two, longer");
        write(&dir.path("missing"), "here");
        assert_eq!(
            describe_changes(&before, &fingerprints(&paths)),
            format!(
                "changed: {}, {}",
                credential.join("tls.crt").display(),
                dir.path("missing").display()
            )
        );
    }
}
