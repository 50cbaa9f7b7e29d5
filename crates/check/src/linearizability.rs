//! A linearizability checker for client histories of the key-value store.
//!
//! The simulator and the fault tests record what clients observed (see [`crate::history`]);
//! this module decides whether some total order of those operations, consistent with real time
//! and with a sequential key-value store, explains every output. That is the promise Chorus
//! makes to clients, and a checker that judges whole histories catches bugs that no per-message
//! invariant sees (stale reads from a deposed leader, a write lost in a view change).
//!
//! # The model
//! Per key, a register holding `Option<String>`; keys start absent. `put` sets it; `append`
//! concatenates (absent counts as ""); `cas` swaps only if the key is present and equal to
//! `from`, and its output must say whether it swapped; a `get`'s output must equal the value;
//! an `append`'s output, when the history has it, must be the length in bytes after it.
//! A `fail` operation did not happen and is dropped. An `unknown` operation may take effect at
//! any time after its call, or never: its return is +infinity and its output unconstrained.
//!
//! # The algorithm
//! Every operation touches one key, so the history is linearizable if and only if each key's
//! sub-history is (locality, Herlihy & Wing 1990), and each key is checked on its own. A key is
//! checked with the algorithm of Wing & Gong ("Testing and verifying concurrent objects", 1993)
//! with the memoization of Lowe ("Testing for linearizability", 2017), as Porcupine does:
//!
//! 1. The calls and returns become entries of one doubly-linked list sorted by time. An
//!    operation precedes another only if its return is strictly before the other's call; at
//!    equal times the call sorts first, so ties count as concurrent.
//! 2. A depth-first search walks the list from its head. At a call entry it tries to linearize
//!    that operation next: if the model accepts it and the pair (set of linearized operations,
//!    resulting state) has not been seen before, the operation and its return are lifted out of
//!    the list and the walk restarts from the head. At a return entry, that operation should
//!    have taken effect already and nothing pending fits, so the search backtracks: it undoes
//!    the last linearization and tries the next call after it.
//! 3. Lowe's cache of (linearized set, state) pairs prunes every branch that reaches a
//!    configuration already explored; the set is a bitset of `u64` words and the state an
//!    interned id, so a probe costs a few word comparisons.
//!
//! That alone runs out of any budget on dense histories (twenty clients on one key: every
//! order of twenty pending writes is a configuration), so three refinements cut the search,
//! each sound and complete, none tied to a particular workload:
//!
//! - **Observers go first, without branching.** A get, or a cas known not to have swapped,
//!   leaves every state it fits unchanged. If one that fits the current state is pending, some
//!   linearization that exists puts it next (move it forward: the states along the order do
//!   not change, and being pending it may go now), so it is linearized at once and never
//!   tried anywhere else; backtracking undoes it together with the write before it. An
//!   `unknown` cas that would not swap is never linearized at all (it need not happen).
//! - **Starved targets.** Every operation that needs a particular value (an `ok` get, a cas
//!   known to have swapped) has a set of possible producers fixed in advance: the operations
//!   called before its return that can leave exactly that value. Once every producer is
//!   linearized, the value can only be the current one and must stay so until the target takes
//!   effect; a path that breaks this is dropped at once, even when the target is called far in
//!   the future (a stale read is refuted at the write that overwrote it, not after every order
//!   of the operations in between).
//! - **Lookahead for pending targets.** A write is linearized only if every pending target
//!   can still build its value from the resulting state and the writes still pending before its
//!   return (a put or cas of a prefix, then appends of the rest, in any order and ignoring
//!   their own constraints: an over-approximation, so `false` is a proof).
//!
//! And before the search, a read that saw a value with a single possible writer, when another
//! write certainly changed the value entirely after that writer and before the read was called,
//! is reported directly as a stale read, with the three operations involved.
//!
//! Append results are checked: an `ok` append may carry the length after it (as Redis
//! `APPEND` answers), and the model requires it.
//!
//! An `unknown` operation's return sorts after everything, so it never forces a backtrack, and
//! the search succeeds once every operation with a real return is linearized: the unknown
//! operations left over can all go at the very end (nothing observes them there), which is the
//! same as never happening. An `unknown` `get` has no effect and an unconstrained output, so it
//! can never help or hinder a linearization; it is dropped up front, which keeps a client that
//! times out on many reads from widening the search.
//!
//! The search is exponential in the worst case, so each key has a step budget
//! ([`CheckLimits::steps_max`]); a key that exhausts it gets [`Verdict::Inconclusive`] rather
//! than hanging the simulator. Results are deterministic: hash maps are only probed, never
//! iterated.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};

use crate::history::{OpKind, OpStatus, Operation, Output, validate};

/// The judgement on a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Some order of the operations, consistent with real time, explains every output.
    Linearizable,
    /// No such order exists for this key's operations (the first such key in key order).
    NotLinearizable {
        /// The key whose operations cannot be linearized.
        key: String,
        /// For a human: the longest linearizable prefix found, the value after it, and the
        /// operations that could not be placed next.
        detail: String,
    },
    /// No key is known to be non-linearizable, but this key (the first in key order) ran out
    /// of its step budget before the search finished.
    Inconclusive {
        /// The key whose search was cut short.
        key: String,
    },
}

impl Verdict {
    /// Whether the history was proved linearizable.
    #[must_use]
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

/// Bounds on the work [`check`] does, so that a pathological history cannot hang a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckLimits {
    /// The most search steps (entries visited) spent on one key before giving up with
    /// [`Verdict::Inconclusive`].
    pub steps_max: u64,
}

impl Default for CheckLimits {
    /// Five million steps per key: a simulator history needs a few thousand, and five million
    /// take well under a second.
    fn default() -> CheckLimits {
        CheckLimits {
            steps_max: 5_000_000,
        }
    }
}

/// Checks whether `ops` is linearizable under the key-value model of the module docs.
///
/// Operations may be in any order. Keys are checked in key order and the first key that is not
/// linearizable is reported; [`Verdict::Inconclusive`] is returned only if no key is found to
/// be non-linearizable.
///
/// # Panics
/// If `ops` is not a valid history (see [`validate`]): histories come from our own workloads or
/// from [`crate::history::read_jsonl`], which validates, so an invalid one is a bug upstream.
#[must_use]
pub fn check(ops: &[Operation], limits: CheckLimits) -> Verdict {
    if let Err(error) = validate(ops) {
        panic!("check needs a valid history: {error}");
    }
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, op) in ops.iter().enumerate() {
        let dropped = match op.status {
            // It did not happen.
            OpStatus::Fail => true,
            // A read whose output nobody saw has no effect and constrains nothing: any
            // linearization with it is one without it, and vice versa.
            OpStatus::Unknown => op.kind == OpKind::Get,
            OpStatus::Ok => false,
        };
        if !dropped {
            by_key.entry(op.key.as_str()).or_default().push(index);
        }
    }
    let mut inconclusive = None;
    for (key, indexes) in by_key {
        if let Some(detail) = stale_read(ops, &indexes) {
            return Verdict::NotLinearizable {
                key: key.to_string(),
                detail,
            };
        }
        match KeySearch::new(ops, &indexes).run(limits.steps_max) {
            KeyOutcome::Linearizable => {}
            KeyOutcome::NotLinearizable(detail) => {
                return Verdict::NotLinearizable {
                    key: key.to_string(),
                    detail,
                };
            }
            KeyOutcome::Inconclusive => {
                inconclusive.get_or_insert(key);
            }
        }
    }
    match inconclusive {
        Some(key) => Verdict::Inconclusive {
            key: key.to_string(),
        },
        None => Verdict::Linearizable,
    }
}

/// A read that returned a value overwritten for certain before the read was called, found
/// without a search: the value has exactly one possible writer, and another write that
/// certainly changed the value ran entirely after that writer and before the read (or the
/// read saw the key absent after a completed write). Such a read contradicts real time in every
/// order, so the history is not linearizable; the search would prove it too, but may need
/// far more than its budget on a dense key. `indexes` are the key's operations, without fails.
fn stale_read(ops: &[Operation], indexes: &[usize]) -> Option<String> {
    let returned = |index: usize| match (ops[index].status, ops[index].ret) {
        (OpStatus::Ok, Some(ret)) => Some(ret),
        _ => None,
    };
    // Writes that certainly left a value other than `value` once they returned.
    let overwrites = |index: usize, value: Option<&str>| {
        let op = &ops[index];
        op.status == OpStatus::Ok
            && match op.kind {
                OpKind::Put => op.value.as_deref() != value,
                OpKind::Append => op.value.as_deref().is_some_and(|suffix| !suffix.is_empty()),
                OpKind::Cas => {
                    matches!(op.output, Output::Swapped(true)) && op.value.as_deref() != value
                }
                OpKind::Get => false,
            }
    };
    for &read in indexes {
        let (OpKind::Get, Output::Value(seen), Some(_)) =
            (ops[read].kind, &ops[read].output, returned(read))
        else {
            continue;
        };
        let seen = seen.as_deref();
        // Every operation that could have left the value seen.
        let writers: Vec<usize> = indexes
            .iter()
            .copied()
            .filter(|&index| {
                let op = &ops[index];
                let value = op.value.as_deref();
                match (op.kind, seen) {
                    (OpKind::Get, _) | (_, None) => false,
                    (OpKind::Put | OpKind::Cas, Some(seen)) => value == Some(seen),
                    (OpKind::Append, Some(seen)) => value.is_some_and(|s| seen.ends_with(s)),
                }
            })
            .collect();
        let call = ops[read].call;
        let overwritten_after = |after: u64| {
            indexes.iter().copied().find(|&index| {
                index != read
                    && ops[index].call > after
                    && returned(index).is_some_and(|ret| ret < call)
                    && overwrites(index, seen)
            })
        };
        let (writer, overwriter) = match (seen, writers.as_slice()) {
            // Keys are never deleted: absent cannot be read after a completed write.
            (None, []) => {
                let Some(overwriter) = indexes.iter().copied().find(|&index| {
                    returned(index).is_some_and(|ret| ret < call) && overwrites(index, None)
                }) else {
                    continue;
                };
                (None, overwriter)
            }
            (Some(_), &[writer]) if ops[writer].kind != OpKind::Append => {
                let Some(ret) = returned(writer) else {
                    continue;
                };
                let Some(overwriter) = overwritten_after(ret) else {
                    continue;
                };
                (Some(writer), overwriter)
            }
            _ => continue,
        };
        let line = |index: usize| {
            let op = &ops[index];
            format!(
                "line {}: client {} {} [call {}, return {}]",
                index + 1,
                op.client,
                op.kind.name(),
                op.call,
                op.ret.map_or("never".to_string(), |ret| ret.to_string())
            )
        };
        let mut text = format!(
            "a stale read: {} read {}, ",
            line(read),
            describe_value(seen)
        );
        match writer {
            Some(writer) => {
                let _ = write!(text, "which only {} wrote; but ", line(writer));
            }
            None => text.push_str("yet "),
        }
        let _ = write!(
            text,
            "{} changed the value after that and before the read was called",
            line(overwriter)
        );
        return Some(text);
    }
    None
}

/// An interned register value: equal ids mean equal values.
type StateId = u32;

/// The id of the absent value; every key starts there.
const ABSENT: StateId = 0;

/// The register values seen during one key's search, each stored once, so that the search state
/// is a small integer that is cheap to compare, hash and cache.
struct States {
    values: Vec<Option<String>>,
    ids: HashMap<String, StateId>,
}

impl States {
    fn new() -> States {
        States {
            values: vec![None],
            ids: HashMap::new(),
        }
    }

    fn intern(&mut self, value: &str) -> StateId {
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        let id = StateId::try_from(self.values.len())
            .expect("invariant: fewer than 2^32 distinct values on one key");
        self.values.push(Some(value.to_string()));
        self.ids.insert(value.to_string(), id);
        id
    }

    fn intern_option(&mut self, value: Option<&str>) -> StateId {
        value.map_or(ABSENT, |value| self.intern(value))
    }

    fn value(&self, id: StateId) -> Option<&str> {
        self.values[id as usize].as_deref()
    }
}

/// One operation of a key as the model sees it, with its values interned.
enum Effect<'a> {
    /// An `ok` get: the value must be `expected`.
    Read { expected: StateId },
    /// A put.
    Write { value: StateId },
    /// An append; `length` is the length in bytes it must leave, when its output is known.
    Append {
        suffix: &'a str,
        length: Option<u64>,
    },
    /// A cas; `swapped` is the output it must match, `None` when unconstrained (`unknown`).
    Cas {
        from: StateId,
        value: StateId,
        swapped: Option<bool>,
    },
}

/// The sequential key-value model restricted to one key.
struct Model<'a> {
    states: States,
    effects: Vec<Effect<'a>>,
    /// Appends build new strings; each (state, operation) is built and interned once.
    appended: HashMap<(StateId, usize), StateId>,
}

impl Model<'_> {
    /// The value operation `op` needs to find when it takes effect, if it needs one: an `ok`
    /// get's output, or the `from` of a cas known to have swapped.
    fn target(&self, op: usize) -> Option<StateId> {
        match self.effects[op] {
            Effect::Read { expected } => Some(expected),
            Effect::Cas {
                from,
                swapped: Some(true),
                ..
            } => Some(from),
            _ => None,
        }
    }

    /// Whether operation `op` only observes the register: a get, or a cas known not to have
    /// swapped. An observer leaves every state it fits unchanged.
    fn is_observer(&self, op: usize) -> bool {
        matches!(
            self.effects[op],
            Effect::Read { .. }
                | Effect::Cas {
                    swapped: Some(false),
                    ..
                }
        )
    }

    /// The state after operation `op` runs in `state`, or `None` if its output says it cannot
    /// have run there.
    fn step(&mut self, state: StateId, op: usize) -> Option<StateId> {
        match self.effects[op] {
            Effect::Read { expected } => (state == expected).then_some(state),
            Effect::Write { value } => Some(value),
            Effect::Append { suffix, length } => {
                let current = self.states.value(state).unwrap_or("");
                if length.is_some_and(|length| {
                    u64::try_from(current.len() + suffix.len()).ok() != Some(length)
                }) {
                    return None;
                }
                if let Some(&next) = self.appended.get(&(state, op)) {
                    return Some(next);
                }
                let mut value = current.to_string();
                value.push_str(suffix);
                let next = self.states.intern(&value);
                self.appended.insert((state, op), next);
                Some(next)
            }
            Effect::Cas {
                from,
                value,
                swapped,
            } => {
                // `from` is interned from a present string, so it never equals ABSENT: a cas
                // on an absent key never swaps.
                let swaps = state == from && state != ABSENT;
                match swapped {
                    Some(output) if output != swaps => None,
                    _ => Some(if swaps { value } else { state }),
                }
            }
        }
    }
}

/// A set of operations, one bit each.
#[derive(Clone)]
struct Bitset {
    words: Vec<u64>,
}

impl Bitset {
    fn new(bits: usize) -> Bitset {
        Bitset {
            words: vec![0; bits.div_ceil(64)],
        }
    }

    fn flip(&mut self, bit: usize) {
        self.words[bit / 64] ^= 1 << (bit % 64);
    }
}

/// A hasher for keys that are already well-mixed `u64`s: the cache computes its hashes
/// incrementally, so hashing them again would only cost time.
#[derive(Default)]
struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// SplitMix64's finalizer: turns small integers into well-spread 64-bit hashes.
fn mix(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Lowe's memo of configurations already explored: (linearized set, state).
///
/// Buckets are keyed by a hash that the search maintains incrementally (the XOR of one random
/// word per linearized operation, mixed with the state), so a probe neither hashes the bitset
/// nor allocates; only a new configuration is copied in.
struct Cache {
    buckets: HashMap<u64, Vec<Configuration>, BuildHasherDefault<PassThroughHasher>>,
}

/// A configuration of the search: the linearized set's words, and the state after it.
type Configuration = (Box<[u64]>, StateId);

impl Cache {
    /// Records the configuration; `false` if it was there already.
    fn insert(&mut self, set_hash: u64, linearized: &Bitset, state: StateId) -> bool {
        let hash = set_hash ^ mix(u64::from(state) ^ 0x5bd1_e995);
        let bucket = self.buckets.entry(hash).or_default();
        let seen = bucket
            .iter()
            .any(|(words, seen_state)| *seen_state == state && **words == *linearized.words);
        if !seen {
            bucket.push((linearized.words.clone().into_boxed_slice(), state));
        }
        !seen
    }
}

/// The result for one key.
enum KeyOutcome {
    Linearizable,
    NotLinearizable(String),
    Inconclusive,
}

/// The end of the entry list, and "no entry".
const NONE: usize = usize::MAX;
/// The list's head sentinel is entry 0.
const HEAD: usize = 0;

/// One call or return of the list, for operation `op` (an index into the key's operations).
#[derive(Clone, Copy)]
struct Entry {
    op: usize,
    is_call: bool,
    /// For a call, the index of its return entry.
    partner: usize,
}

/// The deepest point the search reached before it had to backtrack, for the failure report.
struct Deepest {
    /// The linearized operations, in order.
    prefix: Vec<usize>,
    /// The register value after them.
    state: StateId,
    /// The operation whose return was reached before it could be linearized.
    blocked: usize,
    /// The operations that were pending (called, not linearized) at that point.
    pending: Vec<usize>,
}

/// Which operations can still produce the value each target needs (an `ok` get's output, the
/// `from` of a cas known to have swapped), maintained as the search linearizes and undoes.
///
/// A target whose every possible producer is linearized already ("starved") can only be
/// satisfied by the current value, and only if nothing changes it before the target takes
/// effect. So a path on which a starved, unlinearized target needs another value than the
/// current one is dead, however far in the future the target's call is: the search drops it
/// at once instead of exploring every order of the operations in between. A producer of value
/// `v` for a target is an operation called no later than the target's return that can leave
/// exactly `v`: a put or a cas (swapped or unknown) of `v`, or a non-empty append that ends
/// `v` (with its output, if known, equal to `v`'s length). Over-approximating producers only
/// weakens the pruning, never its soundness.
struct Scarcity {
    /// For each operation, the targets it may produce.
    produces: Vec<Vec<usize>>,
    /// For each operation, the value it needs, if it is a target.
    needs: Vec<Option<StateId>>,
    /// For each target, its producers not yet linearized.
    remaining: Vec<u32>,
    /// Whether each operation is linearized on the current path.
    done: Vec<bool>,
    /// How many unlinearized targets are starved, in all and by the value they need.
    starved_total: usize,
    starved_by_value: HashMap<StateId, usize>,
}

impl Scarcity {
    fn new(model: &Model<'_>, ops: &[Operation], indexes: &[usize]) -> Scarcity {
        let count = indexes.len();
        let mut by_value: HashMap<StateId, Vec<usize>> = HashMap::new();
        let mut by_suffix: HashMap<&str, Vec<usize>> = HashMap::new();
        for (op, effect) in model.effects.iter().enumerate() {
            match *effect {
                Effect::Write { value }
                | Effect::Cas {
                    value,
                    swapped: Some(true) | None,
                    ..
                } => by_value.entry(value).or_default().push(op),
                Effect::Append { suffix, .. } if !suffix.is_empty() => {
                    by_suffix.entry(suffix).or_default().push(op);
                }
                _ => {}
            }
        }
        let mut scarcity = Scarcity {
            produces: vec![Vec::new(); count],
            needs: (0..count).map(|op| model.target(op)).collect(),
            remaining: vec![0; count],
            done: vec![false; count],
            starved_total: 0,
            starved_by_value: HashMap::new(),
        };
        for target in 0..count {
            let Some(needed) = scarcity.needs[target] else {
                continue;
            };
            let deadline = ops[indexes[target]].ret.unwrap_or(u64::MAX);
            let mut producers: Vec<usize> = Vec::new();
            if let Some(value) = model.states.value(needed) {
                producers.extend(by_value.get(&needed).into_iter().flatten());
                for (start, _) in value.char_indices() {
                    for &op in by_suffix.get(&value[start..]).into_iter().flatten() {
                        let fits = match model.effects[op] {
                            Effect::Append {
                                length: Some(length),
                                ..
                            } => u64::try_from(value.len()).ok() == Some(length),
                            _ => true,
                        };
                        if fits {
                            producers.push(op);
                        }
                    }
                }
            }
            for op in producers {
                if op != target && ops[indexes[op]].call <= deadline {
                    scarcity.produces[op].push(target);
                    scarcity.remaining[target] += 1;
                }
            }
            if scarcity.remaining[target] == 0 {
                scarcity.starve(needed, 1);
            }
        }
        scarcity
    }

    fn starve(&mut self, needed: StateId, delta: isize) {
        let count = self.starved_by_value.entry(needed).or_default();
        *count = count.wrapping_add_signed(delta);
        self.starved_total = self.starved_total.wrapping_add_signed(delta);
    }

    /// Records that `op` was linearized.
    fn linearize(&mut self, op: usize) {
        self.done[op] = true;
        if let (Some(needed), 0) = (self.needs[op], self.remaining[op]) {
            self.starve(needed, -1);
        }
        for index in 0..self.produces[op].len() {
            let target = self.produces[op][index];
            self.remaining[target] -= 1;
            if self.remaining[target] == 0 && !self.done[target] {
                let needed = self.needs[target].expect("invariant: only targets are produced");
                self.starve(needed, 1);
            }
        }
    }

    /// Undoes the matching [`Scarcity::linearize`].
    fn unlinearize(&mut self, op: usize) {
        for index in 0..self.produces[op].len() {
            let target = self.produces[op][index];
            if self.remaining[target] == 0 && !self.done[target] {
                let needed = self.needs[target].expect("invariant: only targets are produced");
                self.starve(needed, -1);
            }
            self.remaining[target] += 1;
        }
        self.done[op] = false;
        if let (Some(needed), 0) = (self.needs[op], self.remaining[op]) {
            self.starve(needed, 1);
        }
    }

    /// Whether every starved target still unlinearized needs exactly `state`.
    fn fits(&self, state: StateId) -> bool {
        self.starved_total == self.starved_by_value.get(&state).copied().unwrap_or(0)
    }

    /// An unlinearized starved target that needs another value than `state`, if any.
    fn starved_other_than(&self, state: StateId) -> Option<usize> {
        (0..self.needs.len()).find(|&op| {
            !self.done[op]
                && self.remaining[op] == 0
                && self.needs[op].is_some_and(|needed| needed != state)
        })
    }
}

/// One step of the search's current path: a call entry that was linearized.
struct Linearized {
    /// The call entry.
    call: usize,
    /// The register value before it.
    state: StateId,
    /// Whether it was an observer linearized as soon as it fit (see the module docs): there is
    /// no alternative to try when the search backtracks to it.
    forced: bool,
}

/// The Wing–Gong search over one key's operations.
struct KeySearch<'a> {
    ops: &'a [Operation],
    /// The key's operations, as indexes into `ops`.
    indexes: &'a [usize],
    model: Model<'a>,
    entries: Vec<Entry>,
    next: Vec<usize>,
    previous: Vec<usize>,
    /// Whether each of the key's operations has a real return (is not `unknown`).
    finite: Vec<bool>,
    /// Scratch space of [`KeySearch::reachable`]: which prefixes of the wanted value can be
    /// built, and the suffixes of the appends that may help.
    reached: Vec<bool>,
    suffixes: Vec<&'a str>,
    /// For each of the key's operations, its call entry.
    call_entry: Vec<usize>,
}

impl<'a> KeySearch<'a> {
    fn new(ops: &'a [Operation], indexes: &'a [usize]) -> KeySearch<'a> {
        let mut states = States::new();
        let mut effects = Vec::with_capacity(indexes.len());
        let mut finite = Vec::with_capacity(indexes.len());
        for &index in indexes {
            let op = &ops[index];
            let known = op.status == OpStatus::Ok;
            finite.push(known);
            let value = op.value.as_deref().unwrap_or("");
            effects.push(match op.kind {
                OpKind::Get => match &op.output {
                    Output::Value(output) => Effect::Read {
                        expected: states.intern_option(output.as_deref()),
                    },
                    _ => unreachable!("invariant: only ok gets reach the search, with outputs"),
                },
                OpKind::Put => Effect::Write {
                    value: states.intern(value),
                },
                OpKind::Append => Effect::Append {
                    suffix: value,
                    length: match (known, &op.output) {
                        (true, Output::Length(length)) => Some(*length),
                        _ => None,
                    },
                },
                OpKind::Cas => Effect::Cas {
                    from: states.intern(op.from.as_deref().unwrap_or("")),
                    value: states.intern(value),
                    swapped: match (known, &op.output) {
                        (true, Output::Swapped(swapped)) => Some(*swapped),
                        _ => None,
                    },
                },
            });
        }

        // Sort the calls and returns: by time, an unknown return after every real one, and a
        // call before a return at the same time so that ties are concurrent.
        let mut order: Vec<(bool, u64, bool, usize)> = Vec::with_capacity(2 * indexes.len());
        for (op, &index) in indexes.iter().enumerate() {
            let operation = &ops[index];
            order.push((false, operation.call, false, op));
            match (finite[op], operation.ret) {
                (true, Some(ret)) => order.push((false, ret, true, op)),
                _ => order.push((true, 0, true, op)),
            }
        }
        order.sort_unstable();
        let mut entries = vec![Entry {
            op: NONE,
            is_call: false,
            partner: NONE,
        }];
        let mut return_entry = vec![NONE; indexes.len()];
        let mut call_entry = vec![NONE; indexes.len()];
        for &(_, _, is_return, op) in &order {
            if is_return {
                return_entry[op] = entries.len();
            } else {
                call_entry[op] = entries.len();
            }
            entries.push(Entry {
                op,
                is_call: !is_return,
                partner: NONE,
            });
        }
        for entry in &mut entries[1..] {
            if entry.is_call {
                entry.partner = return_entry[entry.op];
            }
        }
        let count = entries.len();
        let next = (1..=count)
            .map(|index| if index == count { NONE } else { index })
            .collect();
        let previous = (0..count)
            .map(|index| if index == 0 { NONE } else { index - 1 })
            .collect();
        KeySearch {
            ops,
            indexes,
            model: Model {
                states,
                effects,
                appended: HashMap::new(),
            },
            entries,
            next,
            previous,
            finite,
            reached: Vec::new(),
            suffixes: Vec::new(),
            call_entry,
        }
    }

    /// Takes a call entry and its return out of the list.
    fn lift(&mut self, call: usize) {
        for entry in [call, self.entries[call].partner] {
            let (previous, next) = (self.previous[entry], self.next[entry]);
            self.next[previous] = next;
            if next != NONE {
                self.previous[next] = previous;
            }
        }
    }

    /// Puts back what the matching [`KeySearch::lift`] took out. Lifts are undone in reverse
    /// order, so each entry's own links still name its old neighbours (dancing links).
    fn unlift(&mut self, call: usize) {
        for entry in [self.entries[call].partner, call] {
            let (previous, next) = (self.previous[entry], self.next[entry]);
            self.next[previous] = entry;
            if next != NONE {
                self.previous[next] = entry;
            }
        }
    }

    fn run(mut self, steps_max: u64) -> KeyOutcome {
        let count = self.indexes.len();
        let mut remaining_finite = self.finite.iter().filter(|&&finite| finite).count();
        let op_hashes: Vec<u64> = (0..count as u64).map(mix).collect();
        let mut cache = Cache {
            buckets: HashMap::default(),
        };
        let mut linearized = Bitset::new(count);
        let mut set_hash = 0;
        let mut state = ABSENT;
        // The call entries linearized so far, with the state before each and whether it was
        // forced (an observer linearized as soon as it fit, which leaves no alternative to try
        // when the search backtracks to it).
        let mut stack: Vec<Linearized> = Vec::new();
        let mut deepest: Option<Deepest> = None;
        let mut entry = self.next[HEAD];
        // The walk is at the head: observers that fit go first, without branching.
        let mut at_head = true;
        let mut steps: u64 = 0;
        let mut scarcity = Scarcity::new(&self.model, self.ops, self.indexes);
        if let Some(target) = scarcity.starved_other_than(state) {
            // Some operation needs a value that nothing can produce.
            let blocked = self.call_entry[target];
            return KeyOutcome::NotLinearizable(
                self.describe(&self.deepest_here(&stack, state, blocked)),
            );
        }
        loop {
            // Unknown operations still pending can all go last, where nothing observes them.
            if remaining_finite == 0 {
                return KeyOutcome::Linearizable;
            }
            steps += 1;
            if steps > steps_max {
                return KeyOutcome::Inconclusive;
            }
            let mut failed = false;
            if at_head {
                at_head = false;
                // Linearize every pending observer that fits the current state, up to the
                // first pending return. If the configuration that gives was explored
                // already, so was this one, by the argument of the module docs.
                let mut walk = self.next[HEAD];
                while walk != NONE && self.entries[walk].is_call {
                    let op = self.entries[walk].op;
                    if self.model.is_observer(op) && self.model.step(state, op).is_some() {
                        linearized.flip(op);
                        set_hash ^= op_hashes[op];
                        scarcity.linearize(op);
                        stack.push(Linearized {
                            call: walk,
                            state,
                            forced: true,
                        });
                        if self.finite[op] {
                            remaining_finite -= 1;
                        }
                        self.lift(walk);
                        if !cache.insert(set_hash, &linearized, state) {
                            failed = true;
                            break;
                        }
                        // Its return left the list too, which may have made later calls
                        // minimal: go on from its live predecessor.
                        walk = self.previous[walk];
                    }
                    walk = self.next[walk];
                }
                entry = self.next[HEAD];
                if !failed && remaining_finite == 0 {
                    return KeyOutcome::Linearizable;
                }
            }
            if !failed {
                // Every real return is still in the list, so the walk cannot run off its end.
                assert!(entry != NONE, "invariant: a pending return ends the walk");
                let Entry { op, is_call, .. } = self.entries[entry];
                if is_call {
                    if !self.model.is_observer(op) {
                        // An unknown operation that would change nothing need not happen.
                        if let Some(next_state) = self
                            .model
                            .step(state, op)
                            .filter(|&next| self.finite[op] || next != state)
                        {
                            linearized.flip(op);
                            scarcity.linearize(op);
                            self.lift(entry);
                            let starved = if scarcity.fits(next_state) {
                                self.starved_target(next_state)
                            } else {
                                scarcity
                                    .starved_other_than(next_state)
                                    .map(|target| self.call_entry[target])
                            };
                            self.unlift(entry);
                            if let Some(target) = starved {
                                // Reported if nothing gets further: the value this operation
                                // needs can no longer be produced.
                                if deepest
                                    .as_ref()
                                    .is_none_or(|deepest| stack.len() > deepest.prefix.len())
                                {
                                    deepest = Some(self.deepest_here(&stack, state, target));
                                }
                            }
                            let promising = starved.is_none();
                            if promising
                                && cache.insert(set_hash ^ op_hashes[op], &linearized, next_state)
                            {
                                set_hash ^= op_hashes[op];
                                stack.push(Linearized {
                                    call: entry,
                                    state,
                                    forced: false,
                                });
                                state = next_state;
                                if self.finite[op] {
                                    remaining_finite -= 1;
                                }
                                self.lift(entry);
                                entry = self.next[HEAD];
                                at_head = true;
                                continue;
                            }
                            scarcity.unlinearize(op);
                            linearized.flip(op);
                        }
                    }
                    entry = self.next[entry];
                    continue;
                }
                // Unknown returns sort after every real one, so this is a real return: its
                // operation had to take effect by now, and nothing pending fits first.
                debug_assert!(self.finite[op]);
                if deepest
                    .as_ref()
                    .is_none_or(|deepest| stack.len() > deepest.prefix.len())
                {
                    deepest = Some(self.deepest_here(&stack, state, entry));
                }
            }
            // Backtrack: undo linearizations until one that had an alternative, and try the
            // call after it.
            loop {
                let Some(Linearized {
                    call,
                    state: previous_state,
                    forced,
                }) = stack.pop()
                else {
                    // Every configuration the cache holds was explored to a failing
                    // return, which recorded the deepest point.
                    let deepest = deepest.expect("invariant: a failure reached a return");
                    return KeyOutcome::NotLinearizable(self.describe(&deepest));
                };
                let undone = self.entries[call].op;
                scarcity.unlinearize(undone);
                linearized.flip(undone);
                set_hash ^= op_hashes[undone];
                state = previous_state;
                if self.finite[undone] {
                    remaining_finite += 1;
                }
                self.unlift(call);
                if !forced {
                    entry = self.next[call];
                    break;
                }
            }
        }
    }

    /// Whether, from `state`, every pending operation that needs a particular value (an `ok`
    /// get, a cas known to have swapped) can still find it before its return.
    ///
    /// This over-approximates: a value counts as reachable if it is `state`, or a put's or a
    /// cas's new value, followed by any appends, all among the operations still in the list
    /// and called before that return. So `false` proves that no linearization extends the
    /// current path, and the search may drop it (the module docs call this lookahead).
    ///
    /// Returns the call entry of the first operation that cannot, or `None` if all can.
    fn starved_target(&mut self, state: StateId) -> Option<usize> {
        let mut entry = self.next[HEAD];
        while entry != NONE && self.entries[entry].is_call {
            let op = self.entries[entry].op;
            if let Some(target) = self.model.target(op) {
                if target != state && !self.reachable(state, target, entry) {
                    return Some(entry);
                }
            }
            entry = self.next[entry];
        }
        None
    }

    /// Whether `target` can be built from `state` by the writes still in the list whose calls
    /// come before the return of the call entry `needing` (an over-approximation: see
    /// [`KeySearch::starved_target`]).
    fn reachable(&mut self, state: StateId, target: StateId, needing: usize) -> bool {
        let Some(wanted) = self.model.states.value(target) else {
            // Nothing deletes a key: absent is reachable only from absent.
            return state == ABSENT;
        };
        let wanted_len = wanted.len();
        let reached = &mut self.reached;
        reached.clear();
        reached.resize(wanted_len + 1, false);
        let current = self.model.states.value(state).unwrap_or("");
        if wanted.starts_with(current) {
            reached[current.len()] = true;
        }
        let deadline = self.entries[needing].partner;
        let suffixes = &mut self.suffixes;
        suffixes.clear();
        let mut entry = self.next[HEAD];
        while entry != NONE && entry != deadline {
            let Entry { op, is_call, .. } = self.entries[entry];
            if is_call {
                match self.model.effects[op] {
                    Effect::Write { value }
                    | Effect::Cas {
                        value,
                        swapped: Some(true) | None,
                        ..
                    } => {
                        let value = self.model.states.value(value).unwrap_or("");
                        if wanted.starts_with(value) {
                            reached[value.len()] = true;
                        }
                    }
                    Effect::Append { suffix, .. } => suffixes.push(suffix),
                    Effect::Read { .. } | Effect::Cas { .. } => {}
                }
            }
            entry = self.next[entry];
        }
        for position in 0..wanted_len {
            if !reached[position] {
                continue;
            }
            for suffix in suffixes.iter() {
                if !suffix.is_empty() && wanted[position..].starts_with(suffix) {
                    reached[position + suffix.len()] = true;
                }
            }
        }
        reached[wanted_len]
    }

    fn deepest_here(&self, stack: &[Linearized], state: StateId, blocked: usize) -> Deepest {
        let mut pending = Vec::new();
        let mut entry = self.next[HEAD];
        while entry != blocked && entry != NONE {
            if self.entries[entry].is_call {
                pending.push(self.entries[entry].op);
            }
            entry = self.next[entry];
        }
        Deepest {
            prefix: stack
                .iter()
                .map(|linearized| self.entries[linearized.call].op)
                .collect(),
            state,
            blocked: self.entries[blocked].op,
            pending,
        }
    }

    /// The failure report: the deepest prefix, the value after it, and what could not go next.
    fn describe(&self, deepest: &Deepest) -> String {
        /// Long prefixes are cut to their end, which is where the trouble is.
        const SHOWN_MAX: usize = 20;
        let mut text = String::new();
        let _ = writeln!(
            text,
            "no linearization of the {} operations on this key (fail operations and unknown \
             gets are left out); the longest linearizable prefix found has {} operations:",
            self.indexes.len(),
            deepest.prefix.len()
        );
        let skipped = deepest.prefix.len().saturating_sub(SHOWN_MAX);
        if skipped > 0 {
            let _ = writeln!(text, "  ... {skipped} earlier operations");
        }
        for (position, &op) in deepest.prefix.iter().enumerate().skip(skipped) {
            let _ = writeln!(text, "  {}. {}", position + 1, self.describe_op(op));
        }
        let _ = writeln!(
            text,
            "after which the value is {}.",
            describe_value(self.model.states.value(deepest.state))
        );
        let _ = writeln!(
            text,
            "None of the pending operations can go next, yet this one must take effect before \
             its return:\n  {}",
            self.describe_op(deepest.blocked)
        );
        let _ = writeln!(text, "Pending operations (called, not yet linearized):");
        for &op in &deepest.pending {
            let _ = writeln!(text, "  {}", self.describe_op(op));
        }
        text.truncate(text.trim_end().len());
        text
    }

    fn describe_op(&self, op: usize) -> String {
        let index = self.indexes[op];
        let operation = &self.ops[index];
        let arguments = match operation.kind {
            OpKind::Get => String::new(),
            OpKind::Put | OpKind::Append => {
                format!(" {:?}", operation.value.as_deref().unwrap_or(""))
            }
            OpKind::Cas => format!(
                " from {:?} to {:?}",
                operation.from.as_deref().unwrap_or(""),
                operation.value.as_deref().unwrap_or("")
            ),
        };
        let ret = match (operation.status, operation.ret) {
            (OpStatus::Ok, Some(ret)) => ret.to_string(),
            _ => "never (unknown)".to_string(),
        };
        let output = match &operation.output {
            Output::None => String::new(),
            Output::Value(value) => format!(" -> {}", describe_value(value.as_deref())),
            Output::Swapped(true) => " -> swapped".to_string(),
            Output::Swapped(false) => " -> not swapped".to_string(),
            Output::Length(length) => format!(" -> length {length}"),
        };
        format!(
            "line {}: client {} {}{arguments} [call {}, return {ret}] {}{output}",
            index + 1,
            operation.client,
            operation.kind.name(),
            operation.call,
            operation.status.name(),
        )
    }
}

fn describe_value(value: Option<&str>) -> String {
    match value {
        Some(value) => format!("{value:?}"),
        None => "absent".to_string(),
    }
}
