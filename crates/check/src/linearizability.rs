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
//! `from`, and its output must say whether it swapped; a `get`'s output must equal the value.
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
    /// An append.
    Append { suffix: &'a str },
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
    /// The state after operation `op` runs in `state`, or `None` if its output says it cannot
    /// have run there.
    fn step(&mut self, state: StateId, op: usize) -> Option<StateId> {
        match self.effects[op] {
            Effect::Read { expected } => (state == expected).then_some(state),
            Effect::Write { value } => Some(value),
            Effect::Append { suffix } => {
                if let Some(&next) = self.appended.get(&(state, op)) {
                    return Some(next);
                }
                let mut value = self.states.value(state).unwrap_or("").to_string();
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
                OpKind::Append => Effect::Append { suffix: value },
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
        for &(_, _, is_return, op) in &order {
            if is_return {
                return_entry[op] = entries.len();
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
        // The call entries linearized so far, with the state before each.
        let mut stack: Vec<(usize, StateId)> = Vec::new();
        let mut deepest: Option<Deepest> = None;
        let mut entry = self.next[HEAD];
        let mut steps: u64 = 0;
        loop {
            // Unknown operations still pending can all go last, where nothing observes them.
            if remaining_finite == 0 {
                return KeyOutcome::Linearizable;
            }
            steps += 1;
            if steps > steps_max {
                return KeyOutcome::Inconclusive;
            }
            // Every real return is still in the list, so the walk cannot run off its end.
            assert!(entry != NONE, "invariant: a pending return ends the walk");
            let Entry { op, is_call, .. } = self.entries[entry];
            if is_call {
                if let Some(next_state) = self.model.step(state, op) {
                    linearized.flip(op);
                    if cache.insert(set_hash ^ op_hashes[op], &linearized, next_state) {
                        set_hash ^= op_hashes[op];
                        stack.push((entry, state));
                        state = next_state;
                        if self.finite[op] {
                            remaining_finite -= 1;
                        }
                        self.lift(entry);
                        entry = self.next[HEAD];
                        continue;
                    }
                    linearized.flip(op);
                }
                entry = self.next[entry];
            } else {
                // Unknown returns sort after every real one, so this is a real return: its
                // operation had to take effect by now, and nothing pending fits first.
                debug_assert!(self.finite[op]);
                if deepest
                    .as_ref()
                    .is_none_or(|deepest| stack.len() > deepest.prefix.len())
                {
                    deepest = Some(self.deepest_here(&stack, state, entry));
                }
                let Some((call, previous_state)) = stack.pop() else {
                    let deepest = deepest.expect("invariant: recorded just above");
                    return KeyOutcome::NotLinearizable(self.describe(&deepest));
                };
                let undone = self.entries[call].op;
                linearized.flip(undone);
                set_hash ^= op_hashes[undone];
                state = previous_state;
                if self.finite[undone] {
                    remaining_finite += 1;
                }
                self.unlift(call);
                entry = self.next[call];
            }
        }
    }

    fn deepest_here(&self, stack: &[(usize, StateId)], state: StateId, blocked: usize) -> Deepest {
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
                .map(|&(call, _)| self.entries[call].op)
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
