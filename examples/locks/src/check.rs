//! The lock service's check of a client history: what the clients of a correctly replicated
//! lock service can never observe, whatever the faults.
//!
//! Every answer names the log index at which its command was applied, so the history carries
//! the order the replicas agreed on, and the check holds it to three rules:
//!
//! 1. **Real time.** If an operation was answered before another was issued, it was applied
//!    at a smaller index: the agreed order is consistent with real time, the condition that
//!    makes it a linearization.
//! 2. **Fencing tokens strictly increase.** Grants of one lock seen by clients, ordered by
//!    token, were granted at strictly increasing indexes; the same token is never granted
//!    twice (to another owner, or at another index).
//! 3. **No two holders at once.** A grant of a lock comes after the previous grant's lease
//!    ran out, or after its holder released it (seen released before the next grant, or a
//!    release by the holder that may have taken effect unseen: one whose outcome is unknown,
//!    or one answered "not the holder", which may be the retry of an attempt that released).
//!
//! An operation whose outcome is unknown (`output: None`) is held to nothing: it may or may
//! not have taken effect.

use std::collections::BTreeMap;

use chorus_sim::UserOperation;

use crate::{Command, Output, Reply};

/// One operation the check understands: an answered command with its decoded output.
struct Answered<'a> {
    op: &'a UserOperation,
    command: Command,
    output: Output,
}

/// One grant seen by a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Grant {
    owner: u64,
    since: u64,
    expires: u64,
}

/// Checks `history` (see the module docs).
///
/// # Errors
/// The first violation found, described with the operations involved.
pub fn check_history(history: &[UserOperation]) -> Result<(), String> {
    let mut answered = Vec::new();
    // Releases that may have taken effect unseen, by lock and owner.
    let mut unknown_releases: BTreeMap<(String, u64), usize> = BTreeMap::new();
    for op in history {
        let Some(command) = Command::decode(&op.command) else {
            return Err(format!("client {} issued a malformed command", op.client));
        };
        match op.output.as_deref().map(Output::decode) {
            None => {
                if let Command::Release { lock, owner } = &command {
                    *unknown_releases.entry((lock.clone(), *owner)).or_default() += 1;
                }
            }
            Some(None) => {
                return Err(format!(
                    "client {} got an output that does not decode for {command:?}",
                    op.client
                ));
            }
            Some(Some(output)) => {
                if let (Command::Release { lock, owner }, Reply::NotHolder) =
                    (&command, &output.reply)
                {
                    *unknown_releases.entry((lock.clone(), *owner)).or_default() += 1;
                }
                if op.ret.is_none() {
                    return Err(format!("client {} was answered at no time", op.client));
                }
                answered.push(Answered {
                    op,
                    command,
                    output,
                });
            }
        }
    }
    real_time(&answered)?;
    let grants = grants(&answered)?;
    let releases = releases(&answered);
    for (lock, grants) in &grants {
        let ordered: Vec<(u64, Grant)> = grants.iter().map(|(&t, &g)| (t, g)).collect();
        for pair in ordered.windows(2) {
            let [(early_token, early), (late_token, late)] = *pair else {
                continue;
            };
            if late.since <= early.since {
                return Err(format!(
                    "{lock}: token {late_token} was granted to {} at index {}, not after \
                     token {early_token} granted to {} at index {}: fencing tokens went backwards",
                    late.owner, late.since, early.owner, early.since
                ));
            }
            if late.since < early.expires {
                let released = releases.get(&(lock.clone(), early_token)).copied();
                let seen_released = released.is_some_and(|at| at <= late.since);
                let maybe_released = unknown_releases.contains_key(&(lock.clone(), early.owner));
                if !seen_released && !maybe_released {
                    return Err(format!(
                        "{lock}: {} was granted token {late_token} at index {} while {} held \
                         token {early_token} (granted at {}, lease until {}, never released \
                         before): two holders at once",
                        late.owner, late.since, early.owner, early.since, early.expires
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Rule 1: an operation answered before another was issued was applied at a smaller index.
fn real_time(answered: &[Answered<'_>]) -> Result<(), String> {
    let mut by_return: Vec<&Answered<'_>> = answered.iter().collect();
    by_return.sort_by_key(|a| a.op.ret);
    let mut by_call: Vec<&Answered<'_>> = answered.iter().collect();
    by_call.sort_by_key(|a| a.op.call);
    // The operation with the largest index among those answered so far.
    let mut latest: Option<&Answered<'_>> = None;
    let mut returned = by_return.iter().peekable();
    for op in by_call {
        while let Some(done) = returned.next_if(|done| done.op.ret < Some(op.op.call)) {
            if latest.is_none_or(|latest| done.output.at > latest.output.at) {
                latest = Some(done);
            }
        }
        if let Some(before) = latest {
            if before.output.at >= op.output.at {
                return Err(format!(
                    "{:?} was answered (at time {:?}, applied at index {}) before {:?} was \
                     issued (at time {}), yet the later one was applied at index {}: the order \
                     of the log contradicts real time",
                    before.command,
                    before.op.ret,
                    before.output.at,
                    op.command,
                    op.op.call,
                    op.output.at
                ));
            }
        }
    }
    Ok(())
}

/// Rule 2: every grant seen, by lock and token; the same token always names the same grant.
fn grants(answered: &[Answered<'_>]) -> Result<BTreeMap<String, BTreeMap<u64, Grant>>, String> {
    let mut grants: BTreeMap<String, BTreeMap<u64, Grant>> = BTreeMap::new();
    for a in answered {
        let Reply::Granted {
            token,
            since,
            expires,
        } = a.output.reply
        else {
            continue;
        };
        let grant = Grant {
            owner: a.command.owner(),
            since,
            expires,
        };
        let seen = grants
            .entry(a.command.lock().to_owned())
            .or_default()
            .entry(token)
            .or_insert(grant);
        if *seen != grant {
            return Err(format!(
                "{}: token {token} was granted twice: {seen:?} and {grant:?}",
                a.command.lock()
            ));
        }
    }
    Ok(grants)
}

/// Releases seen: the index at which each (lock, token) was released.
fn releases(answered: &[Answered<'_>]) -> BTreeMap<(String, u64), u64> {
    let mut releases = BTreeMap::new();
    for a in answered {
        if let Reply::Released { token } = a.output.reply {
            releases
                .entry((a.command.lock().to_owned(), token))
                .or_insert(a.output.at);
        }
    }
    releases
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn op(call: u64, ret: u64, command: Command, at: u64, reply: Reply) -> UserOperation {
        UserOperation {
            client: command.owner() as usize,
            command: command.encode(),
            call,
            ret: Some(ret),
            output: Some(Output { at, reply }.encode()),
        }
    }

    fn acquire(owner: u64) -> Command {
        Command::Acquire {
            lock: "a".to_owned(),
            owner,
            lease: 10,
        }
    }

    fn granted(token: u64, since: u64) -> Reply {
        Reply::Granted {
            token,
            since,
            expires: since + 10,
        }
    }

    #[test]
    fn a_correct_history_passes() {
        let history = [
            op(0, 5, acquire(1), 1, granted(1, 1)),
            op(6, 8, acquire(2), 20, granted(2, 20)),
            op(
                7,
                9,
                acquire(1),
                21,
                Reply::Busy {
                    holder: 2,
                    expires: 30,
                },
            ),
        ];
        assert_eq!(check_history(&history), Ok(()));
    }

    #[test]
    fn tokens_that_go_backwards_are_caught() {
        let history = [
            op(0, 5, acquire(1), 1, granted(2, 1)),
            op(6, 8, acquire(2), 20, granted(1, 20)),
        ];
        let error = check_history(&history).expect_err("caught");
        assert!(error.contains("backwards"), "{error}");
    }

    #[test]
    fn two_holders_at_once_are_caught_unless_a_release_may_have_happened() {
        let history = vec![
            op(0, 5, acquire(1), 1, granted(1, 1)),
            op(6, 8, acquire(2), 4, granted(2, 4)),
        ];
        // Index 4 after time 5? The real-time rule does not mind (4 > 1); the holders do.
        let error = check_history(&history).expect_err("caught");
        assert!(error.contains("two holders"), "{error}");
        let mut with_release = history.clone();
        with_release.push(UserOperation {
            client: 1,
            command: Command::Release {
                lock: "a".to_owned(),
                owner: 1,
            }
            .encode(),
            call: 5,
            ret: None,
            output: None,
        });
        assert_eq!(check_history(&with_release), Ok(()));
    }

    #[test]
    fn an_order_against_real_time_is_caught() {
        let history = [
            op(0, 5, acquire(1), 9, granted(1, 9)),
            op(
                6,
                8,
                acquire(2),
                7,
                Reply::Busy {
                    holder: 1,
                    expires: 19,
                },
            ),
        ];
        let error = check_history(&history).expect_err("caught");
        assert!(error.contains("real time"), "{error}");
        let garbage = UserOperation {
            client: 0,
            command: acquire(1).encode(),
            call: 0,
            ret: Some(1),
            output: Some(Bytes::from_static(b"\xff")),
        };
        assert!(check_history(&[garbage]).is_err());
    }
}
