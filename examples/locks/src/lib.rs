//! A lock service with fencing tokens: a state machine a user of Chorus writes, to show that
//! the replicated operations need not be get and put.
//!
//! A client *acquires* a named lock for a lease and, if the lock is free, is granted a
//! **fencing token**: a number that strictly increases with every grant of that lock. It hands
//! the token to whatever the lock protects, which refuses work carrying a token smaller than
//! one it has seen; so a holder whose lease ran out while it was paused cannot do harm after
//! the next holder took over. The holder may *release* the lock early.
//!
//! Time in a replicated state machine must be the same on every replica, so a lease is counted
//! in log indexes (the logical clock every [`StateMachine`] call carries): a lock acquired at
//! index `i` with a lease of `n` is held until index `i + n`. Acquiring a lock one already
//! holds answers the same grant again, and releasing a lock one does not hold changes nothing,
//! so a client may retry either without sessions.
//!
//! - [`LockService`] is the state machine: it implements [`StateMachine`] in full, including
//!   [`StateMachine::execute`] and [`StateMachine::apply_effect`] (the effect is the lock's new
//!   state, so primary-backup and the hybrid ship state, not commands) and a snapshot.
//! - [`check_history`] is its check: what every client history of a correct lock service
//!   satisfies (see there).
//! - [`LockBench`] runs it in the simulator under every scheme ([`chorus_sim::Workbench`]);
//!   the runtime runs it for real through `chorus_server::embed` (the example's binary,
//!   `cluster` mode).

use std::collections::BTreeMap;
use std::io::Read;

use bytes::Bytes;
use chorus_core::{
    BytesImage, EffectError, Execution, LogIndex, Prng, RestoreError, SnapshotImage, StateMachine,
    read_snapshot_to_end,
};
use serde::{Deserialize, Serialize};

mod check;

pub use check::check_history;

/// The longest lock name accepted, in bytes.
pub const LOCK_NAME_BYTES_MAX: usize = 64;
/// The longest lease accepted, in log entries.
pub const LEASE_MAX: u64 = 1 << 20;
/// The most locks the service keeps; acquiring another one is refused ([`Reply::Full`]).
pub const LOCKS_MAX: usize = 10_000;

/// What a client asks of the lock service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Acquire `lock` for `owner` for `lease` log entries (clamped to 1..=[`LEASE_MAX`]).
    Acquire {
        /// The lock's name.
        lock: String,
        /// Who asks: a number the client chooses and keeps across retries.
        owner: u64,
        /// How long the lock is held, in log entries, unless released earlier.
        lease: u64,
    },
    /// Release `lock` if `owner` holds it.
    Release {
        /// The lock's name.
        lock: String,
        /// Who asks.
        owner: u64,
    },
}

impl Command {
    /// The command's bytes, as the state machine decodes them.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(self).expect("invariant: a command always encodes"))
    }

    /// Decodes a command; `None` for bytes that are not one.
    #[must_use]
    pub fn decode(bytes: &[u8]) -> Option<Command> {
        postcard::from_bytes(bytes).ok()
    }

    /// The lock the command names.
    #[must_use]
    pub fn lock(&self) -> &str {
        match self {
            Command::Acquire { lock, .. } | Command::Release { lock, .. } => lock,
        }
    }

    /// The owner the command speaks for.
    #[must_use]
    pub fn owner(&self) -> u64 {
        match self {
            Command::Acquire { owner, .. } | Command::Release { owner, .. } => *owner,
        }
    }
}

/// The lock service's answer to a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The owner holds the lock (it was free, or the owner already held it) with this
    /// fencing token, since index `since` until index `expires`.
    Granted {
        /// The fencing token of this grant.
        token: u64,
        /// The index at which the lock was granted.
        since: u64,
        /// The index from which the lock is free again unless released earlier.
        expires: u64,
    },
    /// Another owner holds the lock until index `expires`.
    Busy {
        /// The owner holding it.
        holder: u64,
        /// When its lease ends.
        expires: u64,
    },
    /// The owner held the lock with this token and released it.
    Released {
        /// The token of the grant released.
        token: u64,
    },
    /// The owner did not hold the lock; nothing changed.
    NotHolder,
    /// The service keeps [`LOCKS_MAX`] locks already; nothing changed.
    Full,
    /// The command did not decode (or names a lock longer than [`LOCK_NAME_BYTES_MAX`]);
    /// nothing changed.
    Malformed,
}

/// The output of one command: the index at which it was applied, and the reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    /// The log index at which the command was applied.
    pub at: u64,
    /// The answer.
    pub reply: Reply,
}

impl Output {
    /// The output's bytes.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(self).expect("invariant: an output always encodes"))
    }

    /// Decodes an output; `None` for bytes that are not one.
    #[must_use]
    pub fn decode(bytes: &[u8]) -> Option<Output> {
        postcard::from_bytes(bytes).ok()
    }
}

/// Who holds a lock, and until when.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The owner.
    pub owner: u64,
    /// The index at which it was granted.
    pub since: u64,
    /// The index from which the lock is free again.
    pub expires: u64,
}

/// One lock: the last token granted (0 before the first grant) and its holder, if any.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// The token of the latest grant; the next grant's is one more.
    pub token: u64,
    /// The holder of the latest grant, while it holds the lock.
    pub holder: Option<Holder>,
}

impl Lock {
    /// The holder at index `now`: nobody once the lease ran out.
    #[must_use]
    pub fn holder_at(&self, now: u64) -> Option<Holder> {
        self.holder.filter(|holder| holder.expires > now)
    }
}

/// The effect of one command: the new state of the lock it changed, or nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Effect {
    /// The command changed nothing.
    Unchanged,
    /// `lock` is now `state`.
    Set {
        /// The lock's name.
        lock: String,
        /// Its new state.
        state: Lock,
    },
}

/// A deliberately broken behaviour, to show that the checks catch it (tests and the
/// example's `--bug` flag only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// Restoring a snapshot forgets every lock nobody holds, and with it the lock's last
    /// token: the next grant of that lock after a restore starts again at token 1.
    RestoreForgetsFreeLocks,
}

/// The lock service: every lock by name.
#[derive(Clone, Debug, Default)]
pub struct LockService {
    locks: BTreeMap<String, Lock>,
    bug: Option<Bug>,
}

impl LockService {
    /// An empty lock service.
    #[must_use]
    pub fn new() -> LockService {
        LockService::default()
    }

    /// An empty lock service with `bug` switched on.
    #[must_use]
    pub fn with_bug(bug: Bug) -> LockService {
        LockService {
            locks: BTreeMap::new(),
            bug: Some(bug),
        }
    }

    /// The lock named `name`, if it was ever acquired.
    #[must_use]
    pub fn lock(&self, name: &str) -> Option<&Lock> {
        self.locks.get(name)
    }

    /// How many locks the service keeps.
    #[must_use]
    pub fn len(&self) -> usize {
        self.locks.len()
    }

    /// Whether the service keeps no lock.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.locks.is_empty()
    }

    /// Runs `command` at `index`: the reply, and the lock's new state if it changed.
    fn run(&self, index: u64, command: &[u8]) -> (Reply, Option<(String, Lock)>) {
        let Some(command) = Command::decode(command) else {
            return (Reply::Malformed, None);
        };
        if command.lock().len() > LOCK_NAME_BYTES_MAX {
            return (Reply::Malformed, None);
        }
        let current = self.locks.get(command.lock()).copied();
        if current.is_none() && self.locks.len() >= LOCKS_MAX {
            return (Reply::Full, None);
        }
        let lock = current.unwrap_or_default();
        match command {
            Command::Acquire {
                lock: name,
                owner,
                lease,
            } => match lock.holder_at(index) {
                Some(holder) if holder.owner == owner => (
                    Reply::Granted {
                        token: lock.token,
                        since: holder.since,
                        expires: holder.expires,
                    },
                    None,
                ),
                Some(holder) => (
                    Reply::Busy {
                        holder: holder.owner,
                        expires: holder.expires,
                    },
                    None,
                ),
                None => {
                    let holder = Holder {
                        owner,
                        since: index,
                        expires: index.saturating_add(lease.clamp(1, LEASE_MAX)),
                    };
                    let token = lock.token.saturating_add(1);
                    let state = Lock {
                        token,
                        holder: Some(holder),
                    };
                    let reply = Reply::Granted {
                        token,
                        since: holder.since,
                        expires: holder.expires,
                    };
                    (reply, Some((name, state)))
                }
            },
            Command::Release { lock: name, owner } => match lock.holder_at(index) {
                Some(holder) if holder.owner == owner => {
                    let state = Lock {
                        token: lock.token,
                        holder: None,
                    };
                    (Reply::Released { token: lock.token }, Some((name, state)))
                }
                _ => (Reply::NotHolder, None),
            },
        }
    }
}

impl StateMachine for LockService {
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Bytes {
        self.execute(index, command).output
    }

    fn execute(&mut self, index: LogIndex, command: &[u8]) -> Execution {
        let (reply, change) = self.run(index.0, command);
        let effect = match change {
            None => Effect::Unchanged,
            Some((lock, state)) => {
                self.locks.insert(lock.clone(), state);
                Effect::Set { lock, state }
            }
        };
        Execution {
            output: Output { at: index.0, reply }.encode(),
            effect: Bytes::from(
                postcard::to_allocvec(&effect).expect("invariant: an effect always encodes"),
            ),
        }
    }

    fn apply_effect(&mut self, _index: LogIndex, effect: &[u8]) -> Result<(), EffectError> {
        let effect: Effect = postcard::from_bytes(effect).map_err(|error| EffectError {
            reason: format!("not a lock service effect: {error}"),
        })?;
        if let Effect::Set { lock, state } = effect {
            self.locks.insert(lock, state);
        }
        Ok(())
    }

    /// A query is a lock's name; the answer is its [`Lock`] (postcard), empty if the lock was
    /// never acquired.
    fn query(&self, query: &[u8]) -> Bytes {
        let lock = std::str::from_utf8(query)
            .ok()
            .and_then(|name| self.locks.get(name));
        match lock {
            None => Bytes::new(),
            Some(lock) => {
                Bytes::from(postcard::to_allocvec(lock).expect("invariant: a lock always encodes"))
            }
        }
    }

    fn snapshot(&self) -> Box<dyn SnapshotImage> {
        let locks: Vec<(&String, &Lock)> = self.locks.iter().collect();
        Box::new(BytesImage(Bytes::from(
            postcard::to_allocvec(&locks).expect("invariant: the locks always encode"),
        )))
    }

    fn restore(&mut self, input: &mut dyn Read) -> Result<(), RestoreError> {
        let bytes = read_snapshot_to_end(input)?;
        let locks: Vec<(String, Lock)> =
            postcard::from_bytes(&bytes).map_err(|error| RestoreError {
                reason: format!("not a lock service image: {error}"),
            })?;
        if locks.len() > LOCKS_MAX {
            return Err(RestoreError {
                reason: format!("{} locks, more than {LOCKS_MAX}", locks.len()),
            });
        }
        self.locks = locks.into_iter().collect();
        if self.bug == Some(Bug::RestoreForgetsFreeLocks) {
            self.locks.retain(|_, lock| lock.holder.is_some());
        }
        Ok(())
    }
}

/// The lock service in the simulator: its clients acquire and release a few locks with
/// short leases, so that leases run out, locks change hands and tokens climb in every run.
#[derive(Clone, Copy, Debug)]
pub struct LockBench {
    /// How many locks the clients contend for.
    pub locks: usize,
    /// Leases are drawn from this range of log entries.
    pub lease: (u64, u64),
    /// A bug to switch on in every replica.
    pub bug: Option<Bug>,
}

impl Default for LockBench {
    fn default() -> LockBench {
        LockBench {
            locks: 3,
            lease: (5, 40),
            bug: None,
        }
    }
}

impl LockBench {
    /// The next command of client `client` (owner `client + 1`): 60 % acquires, 40 %
    /// releases, of a random lock among `locks`.
    #[must_use]
    pub fn next_command(&self, client: usize, rng: &mut Prng) -> Command {
        let lock = format!("lock{}", rng.index(self.locks.max(1)));
        let owner = client as u64 + 1;
        if rng.range(0, 100) < 60 {
            let lease = rng.range(self.lease.0, self.lease.1.max(self.lease.0 + 1));
            Command::Acquire { lock, owner, lease }
        } else {
            Command::Release { lock, owner }
        }
    }
}

/// The runtime's Raft host replicates the lock service (see `chorus_server::embed`).
impl chorus_server::embed::Replicated for LockService {
    fn fresh() -> LockService {
        LockService::new()
    }

    fn keys(&self) -> u64 {
        self.len() as u64
    }
}

impl chorus_sim::Workbench for LockBench {
    fn name(&self) -> &str {
        "locks"
    }

    fn machine(&self) -> Box<dyn StateMachine + Send> {
        Box::new(match self.bug {
            None => LockService::new(),
            Some(bug) => LockService::with_bug(bug),
        })
    }

    fn command(&self, client: usize, rng: &mut Prng) -> Bytes {
        self.next_command(client, rng).encode()
    }

    fn check(&self, history: &[chorus_sim::UserOperation]) -> Result<(), String> {
        check_history(history)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acquire(lock: &str, owner: u64, lease: u64) -> Bytes {
        Command::Acquire {
            lock: lock.to_owned(),
            owner,
            lease,
        }
        .encode()
    }

    fn release(lock: &str, owner: u64) -> Bytes {
        Command::Release {
            lock: lock.to_owned(),
            owner,
        }
        .encode()
    }

    fn reply(service: &mut LockService, index: u64, command: &[u8]) -> Reply {
        let output = service.apply(LogIndex(index), command);
        Output::decode(&output).expect("outputs decode").reply
    }

    #[test]
    fn tokens_increase_with_every_grant_and_leases_run_out() {
        let mut s = LockService::new();
        assert_eq!(
            reply(&mut s, 1, &acquire("a", 1, 10)),
            Reply::Granted {
                token: 1,
                since: 1,
                expires: 11
            }
        );
        // A retry by the holder answers the same grant; another owner waits.
        assert_eq!(
            reply(&mut s, 2, &acquire("a", 1, 10)),
            Reply::Granted {
                token: 1,
                since: 1,
                expires: 11
            }
        );
        assert_eq!(
            reply(&mut s, 3, &acquire("a", 2, 10)),
            Reply::Busy {
                holder: 1,
                expires: 11
            }
        );
        // The lease ran out: the next grant has a larger token.
        assert_eq!(
            reply(&mut s, 11, &acquire("a", 2, 5)),
            Reply::Granted {
                token: 2,
                since: 11,
                expires: 16
            }
        );
        assert_eq!(reply(&mut s, 12, &release("a", 1)), Reply::NotHolder);
        assert_eq!(
            reply(&mut s, 13, &release("a", 2)),
            Reply::Released { token: 2 }
        );
        assert_eq!(
            reply(&mut s, 14, &acquire("a", 1, 5)),
            Reply::Granted {
                token: 3,
                since: 14,
                expires: 19
            }
        );
        assert_eq!(reply(&mut s, 15, b"\xff\xff"), Reply::Malformed);
        let long = "x".repeat(LOCK_NAME_BYTES_MAX + 1);
        assert_eq!(reply(&mut s, 16, &acquire(&long, 1, 5)), Reply::Malformed);
    }

    /// Passive replication: a backup that applies the primary's effects holds the primary's
    /// state, and a snapshot restores it exactly.
    #[test]
    fn effects_and_snapshots_reproduce_the_state() {
        let (mut primary, mut backup) = (LockService::new(), LockService::new());
        let commands = [
            acquire("a", 1, 3),
            acquire("b", 2, 50),
            acquire("a", 2, 3),
            release("b", 2),
            acquire("a", 3, 3),
            b"junk".to_vec().into(),
        ];
        for (i, command) in commands.iter().enumerate() {
            let index = LogIndex(i as u64 * 2 + 1);
            let execution = primary.execute(index, command);
            backup
                .apply_effect(index, &execution.effect)
                .expect("an effect applies");
        }
        assert_eq!(primary.locks, backup.locks);
        assert_eq!(primary.snapshot_bytes(), backup.snapshot_bytes());
        let mut restored = LockService::new();
        restored
            .restore_bytes(&primary.snapshot_bytes())
            .expect("restores");
        assert_eq!(restored.locks, primary.locks);
        assert!(backup.apply_effect(LogIndex(99), b"\xff").is_err());
        assert!(restored.restore_bytes(b"\xff\xff\xff").is_err());
    }

    #[test]
    fn the_injected_bug_forgets_tokens_on_restore() {
        let mut s = LockService::with_bug(Bug::RestoreForgetsFreeLocks);
        reply(&mut s, 1, &acquire("a", 1, 3));
        reply(&mut s, 2, &release("a", 1));
        let image = s.snapshot_bytes();
        s.restore_bytes(&image).expect("restores");
        assert_eq!(
            reply(&mut s, 3, &acquire("a", 2, 3)),
            Reply::Granted {
                token: 1,
                since: 3,
                expires: 6
            }
        );
    }
}
