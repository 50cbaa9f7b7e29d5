//! Randomized evidence that the checker is right: histories generated from a sequential run of
//! the model with random overlapping intervals are linearizable by construction and must pass;
//! the same histories with one read corrupted must fail; and on small random histories, which
//! are often not linearizable, the checker agrees with a brute-force search over every order.

use chorus_check::history::{OpKind, OpStatus, Operation, Output, validate};
use chorus_check::linearizability::{CheckLimits, Verdict, check};
use chorus_core::Prng;

/// The shape of a generated history.
struct Workload {
    clients: u64,
    keys: u64,
    ops: usize,
    /// Chance that an operation's outcome is unknown (its effect may or may not happen).
    unknown: f64,
    /// Chance that an operation fails (its effect never happens).
    fail: f64,
}

/// The sequential model: one `Option<String>` per key, keys start absent.
fn apply(state: &mut Option<String>, op: &Operation) -> Output {
    match op.kind {
        OpKind::Get => Output::Value(state.clone()),
        OpKind::Put => {
            *state = op.value.clone();
            Output::None
        }
        OpKind::Append => {
            let mut value = state.take().unwrap_or_default();
            value.push_str(op.value.as_deref().expect("an append has a suffix"));
            let length = value.len() as u64;
            *state = Some(value);
            Output::Length(length)
        }
        OpKind::Cas => {
            let swapped = state.is_some() && *state == op.from;
            if swapped {
                *state = op.value.clone();
            }
            Output::Swapped(swapped)
        }
    }
}

/// A client's operation between its call and its return.
struct InFlight {
    op: Operation,
    /// Whether its effect has been applied to the model (its linearization point passed).
    applied: bool,
}

/// Generates a history that is linearizable by construction: clock ticks advance, and at each
/// tick a random client either calls, reaches its linearization point (the model runs the
/// operation and fixes its output) or returns, so each operation takes effect exactly once
/// inside its interval. Unknown operations are applied or not at random and lose their output;
/// failed ones are never applied.
fn generate(seed: u64, workload: &Workload) -> Vec<Operation> {
    let mut prng = Prng::new(seed);
    let mut state: Vec<Option<String>> = vec![None; workload.keys as usize];
    let mut in_flight: Vec<Option<InFlight>> = (0..workload.clients).map(|_| None).collect();
    let mut history = Vec::new();
    let mut started = 0;
    let mut time = 0;
    let mut written = 0;
    while started < workload.ops || in_flight.iter().any(Option::is_some) {
        time += prng.range(1, 4);
        let client = prng.index(in_flight.len());
        match in_flight[client].take() {
            None if started < workload.ops => {
                started += 1;
                written += 1;
                let key = prng.range(0, workload.keys) as usize;
                let kind = match prng.range(0, 10) {
                    0..4 => OpKind::Get,
                    4..6 => OpKind::Put,
                    6..8 => OpKind::Append,
                    _ => OpKind::Cas,
                };
                let value = format!("{client}.{written};");
                let from = match (&state[key], prng.chance(0.7)) {
                    (Some(current), true) => current.clone(),
                    _ => format!("stale{};", prng.range(0, 3)),
                };
                let op = Operation {
                    client: client as u64,
                    kind,
                    key: format!("k{key}"),
                    value: (kind != OpKind::Get).then_some(value),
                    from: (kind == OpKind::Cas).then_some(from),
                    call: time,
                    ret: None,
                    status: OpStatus::Ok,
                    output: Output::None,
                };
                in_flight[client] = Some(InFlight { op, applied: false });
            }
            None => {}
            Some(mut flight) if !flight.applied && prng.chance(0.5) => {
                let key: usize = flight.op.key[1..].parse().expect("generated keys are k<n>");
                flight.op.output = apply(&mut state[key], &flight.op);
                flight.applied = true;
                in_flight[client] = Some(flight);
            }
            Some(flight) if !flight.applied => in_flight[client] = Some(flight),
            Some(InFlight { mut op, applied }) => {
                debug_assert!(applied);
                op.ret = Some(time);
                if prng.chance(workload.unknown) {
                    op.status = OpStatus::Unknown;
                    op.output = Output::None;
                    if prng.chance(0.5) {
                        op.ret = None;
                    }
                }
                history.push(op);
            }
        }
        // Failed and never-applied unknown operations are decided at the call: a client whose
        // operation is fresh may turn it into one with no effect at all.
        if let Some(flight) = in_flight[client].as_mut() {
            if !flight.applied && flight.op.call == time {
                if prng.chance(workload.fail) {
                    let mut op = flight.op.clone();
                    op.status = OpStatus::Fail;
                    op.ret = Some(time + prng.range(0, 20));
                    in_flight[client] = None;
                    // The client is busy until the failure returns; keep the clock simple by
                    // moving it past that point.
                    time = op.ret.expect("a failed operation has a return");
                    history.push(op);
                } else if prng.chance(workload.unknown) {
                    let mut op = flight.op.clone();
                    op.status = OpStatus::Unknown;
                    in_flight[client] = None;
                    history.push(op);
                }
            }
        }
    }
    validate(&history).expect("generated histories are valid");
    history
}

/// Replaces one ok get's output by a value nothing ever wrote; `None` if there is no ok get.
fn corrupt_one_get(seed: u64, history: &mut [Operation]) -> Option<String> {
    let gets: Vec<usize> = (0..history.len())
        .filter(|&index| {
            history[index].kind == OpKind::Get && history[index].status == OpStatus::Ok
        })
        .collect();
    if gets.is_empty() {
        return None;
    }
    let victim = gets[Prng::new(seed).index(gets.len())];
    history[victim].output = Output::Value(Some("never written".to_string()));
    Some(history[victim].key.clone())
}

const TYPICAL: Workload = Workload {
    clients: 5,
    keys: 5,
    ops: 200,
    unknown: 0.02,
    fail: 0.02,
};

#[test]
fn histories_linearizable_by_construction_pass() {
    for seed in 0..300 {
        let history = generate(seed, &TYPICAL);
        let verdict = check(&history, CheckLimits::default());
        assert_eq!(verdict, Verdict::Linearizable, "seed {seed}: {verdict:?}");
    }
}

#[test]
fn histories_with_many_unknowns_and_failures_pass() {
    let workload = Workload {
        clients: 4,
        keys: 2,
        ops: 100,
        unknown: 0.15,
        fail: 0.1,
    };
    for seed in 0..200 {
        let history = generate(seed, &workload);
        let verdict = check(&history, CheckLimits::default());
        assert_eq!(verdict, Verdict::Linearizable, "seed {seed}: {verdict:?}");
    }
}

#[test]
fn corrupting_one_read_is_detected() {
    let (mut detected, mut named) = (0, 0);
    for seed in 0..300 {
        let mut history = generate(seed, &TYPICAL);
        let Some(key) = corrupt_one_get(seed, &mut history) else {
            continue;
        };
        match check(&history, CheckLimits::default()) {
            Verdict::NotLinearizable {
                key: failing,
                detail,
            } => {
                assert_eq!(failing, key, "seed {seed}");
                // The report shows the deepest dead end of the search, which is usually, not
                // always, the corrupted read itself.
                named += usize::from(detail.contains("never written"));
                detected += 1;
            }
            other => panic!("seed {seed}: the corrupted read went unnoticed: {other:?}"),
        }
    }
    assert!(detected > 250, "too few histories had a get: {detected}");
    assert!(
        named * 10 >= detected * 9,
        "only {named} of {detected} reports name the corrupted read"
    );
}

#[test]
fn thousand_operations_five_clients_five_keys_check() {
    let workload = Workload {
        ops: 1000,
        ..TYPICAL
    };
    for seed in 0..5 {
        let history = generate(seed, &workload);
        assert!(history.len() >= 1000);
        assert_eq!(
            check(&history, CheckLimits::default()),
            Verdict::Linearizable
        );
        let mut corrupted = history.clone();
        if corrupt_one_get(seed, &mut corrupted).is_some() {
            assert!(matches!(
                check(&corrupted, CheckLimits::default()),
                Verdict::NotLinearizable { .. }
            ));
        }
    }
}

/// The definition, searched exhaustively: some order of the operations, in which each one
/// comes after every operation with a real return before its call, runs through the model with
/// every `ok` output matching; `fail` operations are left out, and `unknown` ones may be left
/// out or run anywhere after their call with any output. Keys are not partitioned, so that
/// this shares nothing with the checker's design.
fn brute_force(history: &[Operation]) -> bool {
    let ops: Vec<&Operation> = history
        .iter()
        .filter(|op| op.status != OpStatus::Fail)
        .collect();
    let mut done = vec![false; ops.len()];
    let mut state: std::collections::BTreeMap<String, Option<String>> = Default::default();
    search(&ops, &mut done, &mut state)
}

fn search(
    ops: &[&Operation],
    done: &mut [bool],
    state: &mut std::collections::BTreeMap<String, Option<String>>,
) -> bool {
    let finished = |index: usize| done[index] || ops[index].status == OpStatus::Unknown;
    if (0..ops.len()).all(finished) {
        return true;
    }
    for candidate in 0..ops.len() {
        if done[candidate] {
            continue;
        }
        let op = ops[candidate];
        // It can go next only if no operation still to be placed returned before its call.
        let blocked = (0..ops.len()).any(|other| {
            !done[other]
                && ops[other].status == OpStatus::Ok
                && ops[other].ret.expect("an ok operation has a return") < op.call
        });
        if blocked {
            continue;
        }
        let saved = state.get(&op.key).cloned().flatten();
        let mut value = saved.clone();
        let output = apply(&mut value, op);
        // An append's length is optional in a history.
        let unconstrained = matches!(op.output, Output::None) && op.kind == OpKind::Append;
        if op.status == OpStatus::Ok && output != op.output && !unconstrained {
            continue;
        }
        state.insert(op.key.clone(), value);
        done[candidate] = true;
        if search(ops, done, state) {
            return true;
        }
        done[candidate] = false;
        state.insert(op.key.clone(), saved);
    }
    false
}

/// A small history with random intervals and random outputs, so often not linearizable.
fn random_small(seed: u64) -> Vec<Operation> {
    let mut prng = Prng::new(seed);
    let clients = prng.range(1, 5);
    let count = prng.range(1, 8);
    let values = ["a", "b", "ab", "ba"];
    let mut busy_until = vec![0u64; clients as usize];
    let mut history = Vec::new();
    for _ in 0..count {
        let client = prng.index(clients as usize);
        let call = busy_until[client] + prng.range(0, 4);
        let ret = call + prng.range(0, 6);
        let kind = match prng.range(0, 4) {
            0 => OpKind::Get,
            1 => OpKind::Put,
            2 => OpKind::Append,
            _ => OpKind::Cas,
        };
        let status = match prng.range(0, 8) {
            0 => OpStatus::Fail,
            1 => OpStatus::Unknown,
            _ => OpStatus::Ok,
        };
        let output = match (status, kind) {
            (OpStatus::Ok, OpKind::Get) => Output::Value(if prng.chance(0.2) {
                None
            } else {
                Some(values[prng.index(values.len())].to_string())
            }),
            (OpStatus::Ok, OpKind::Cas) => Output::Swapped(prng.chance(0.5)),
            (OpStatus::Ok, OpKind::Append) if prng.chance(0.5) => Output::Length(prng.range(1, 4)),
            _ => Output::None,
        };
        let suffix = ["a", "b"][prng.index(2)];
        let op = Operation {
            client: client as u64,
            kind,
            key: if prng.chance(0.8) { "x" } else { "y" }.to_string(),
            value: match kind {
                OpKind::Get => None,
                OpKind::Append => Some(suffix.to_string()),
                _ => Some(values[prng.index(values.len())].to_string()),
            },
            from: (kind == OpKind::Cas).then(|| values[prng.index(values.len())].to_string()),
            call,
            ret: (status != OpStatus::Unknown || prng.chance(0.5)).then_some(ret),
            status,
            output,
        };
        busy_until[client] = op.ret.unwrap_or(call);
        history.push(op);
    }
    validate(&history).expect("generated histories are valid");
    history
}

#[test]
fn checker_agrees_with_brute_force_on_small_random_histories() {
    let (mut linearizable, mut not_linearizable) = (0, 0);
    for seed in 0..5000 {
        let history = random_small(seed);
        let expected = brute_force(&history);
        let verdict = check(&history, CheckLimits::default());
        assert_eq!(
            verdict.is_linearizable(),
            expected,
            "seed {seed}: brute force says {expected}, checker says {verdict:?}\n{history:#?}"
        );
        if expected {
            linearizable += 1;
        } else {
            not_linearizable += 1;
        }
    }
    // Both answers must be well represented, or the agreement proves little.
    assert!(
        linearizable > 1000 && not_linearizable > 1000,
        "{linearizable} / {not_linearizable}"
    );
}

/// The shape of the simulator's hardest histories: twenty clients on one key.
const DENSE: Workload = Workload {
    clients: 20,
    keys: 1,
    ops: 1000,
    unknown: 0.01,
    fail: 0.01,
};

/// Makes one ok get read a value that was really written, but overwritten before the get was
/// called: the stale read of a deposed leader, the subtlest lie a register can tell. Values are
/// unique, so the history cannot be linearizable. `None` if no such (put, put, get) exists.
fn stale_read(seed: u64, history: &mut [Operation]) -> Option<usize> {
    let ok = |op: &Operation, kind: OpKind| op.kind == kind && op.status == OpStatus::Ok;
    let puts: Vec<usize> = (0..history.len())
        .filter(|&index| ok(&history[index], OpKind::Put))
        .collect();
    let gets: Vec<usize> = (0..history.len())
        .filter(|&index| ok(&history[index], OpKind::Get))
        .collect();
    let mut prng = Prng::new(seed);
    for _ in 0..1000 {
        let get = gets[prng.index(gets.len())];
        let old = puts[prng.index(puts.len())];
        let returned = |index: usize| history[index].ret.expect("an ok operation has a return");
        // A put that returned after the old one and before the get was called overwrote it.
        let overwritten = puts.iter().any(|&newer| {
            history[newer].call > returned(old) && returned(newer) < history[get].call
        });
        if overwritten {
            history[get].output = Output::Value(history[old].value.clone());
            return Some(get);
        }
    }
    None
}

#[test]
fn dense_histories_of_twenty_clients_on_one_key_are_judged() {
    for seed in 0..3 {
        let history = generate(seed, &DENSE);
        let verdict = check(&history, CheckLimits::default());
        assert_eq!(verdict, Verdict::Linearizable, "seed {seed}: {verdict:?}");
    }
}

#[test]
fn a_stale_read_in_a_dense_history_is_a_violation_not_inconclusive() {
    for seed in 0..3 {
        let mut history = generate(seed, &DENSE);
        let get = stale_read(seed, &mut history).expect("a dense history has a stale read");
        match check(&history, CheckLimits::default()) {
            Verdict::NotLinearizable { key, .. } => assert_eq!(key, history[get].key),
            other => panic!(
                "seed {seed}: the stale read on line {} got {other:?}",
                get + 1
            ),
        }
    }
}

/// Makes one ok get see the last two appends before it in the wrong order, when they were
/// ordered in real time (the first returned before the second was called): the value read was
/// never the register's, yet every suffix in it was really appended, so no single read is
/// impossible on its own and only the search can refute it. `None` if no get qualifies.
fn swapped_appends(history: &mut [Operation]) -> Option<usize> {
    let appended: std::collections::BTreeMap<String, usize> = (0..history.len())
        .filter(|&index| history[index].kind == OpKind::Append)
        .map(|index| (history[index].value.clone().unwrap_or_default(), index))
        .collect();
    for get in 0..history.len() {
        let Output::Value(Some(seen)) = &history[get].output else {
            continue;
        };
        let tokens: Vec<&str> = seen.split_inclusive(';').collect();
        let [.., first, second] = tokens.as_slice() else {
            continue;
        };
        let (Some(&a), Some(&b)) = (appended.get(*first), appended.get(*second)) else {
            continue;
        };
        let ordered = history[a].status == OpStatus::Ok
            && history[b].status == OpStatus::Ok
            && history[a].ret.is_some_and(|ret| ret < history[b].call);
        if ordered {
            let kept = &seen[..seen.len() - first.len() - second.len()];
            history[get].output = Output::Value(Some(format!("{kept}{second}{first}")));
            return Some(get);
        }
    }
    None
}

#[test]
fn appends_read_out_of_order_in_a_dense_history_are_a_violation_not_inconclusive() {
    let mut found = 0;
    for seed in 0..10 {
        let mut history = generate(seed, &DENSE);
        let Some(get) = swapped_appends(&mut history) else {
            continue;
        };
        found += 1;
        match check(&history, CheckLimits::default()) {
            Verdict::NotLinearizable { key, .. } => assert_eq!(key, history[get].key),
            other => panic!("seed {seed}: the read on line {} got {other:?}", get + 1),
        }
    }
    assert!(found >= 3, "only {found} histories had a read to corrupt");
}
