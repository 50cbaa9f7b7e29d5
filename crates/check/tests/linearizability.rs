//! Hand-written histories that prove the checker accepts what the key-value model allows and
//! rejects what it forbids: stale reads, lost writes, wrong cas outputs, reordered appends,
//! effects before their call, failed writes that took effect.

use chorus_check::history::{OpKind, OpStatus, Operation, Output};
use chorus_check::linearizability::{CheckLimits, Verdict, check};

fn op(client: u64, kind: OpKind, key: &str, call: u64, ret: u64) -> Operation {
    Operation {
        client,
        kind,
        key: key.to_string(),
        value: None,
        from: None,
        call,
        ret: Some(ret),
        status: OpStatus::Ok,
        output: Output::None,
    }
}

fn put(client: u64, value: &str, call: u64, ret: u64) -> Operation {
    Operation {
        value: Some(value.to_string()),
        ..op(client, OpKind::Put, "x", call, ret)
    }
}

fn append(client: u64, suffix: &str, call: u64, ret: u64) -> Operation {
    Operation {
        value: Some(suffix.to_string()),
        ..op(client, OpKind::Append, "x", call, ret)
    }
}

fn get(client: u64, output: Option<&str>, call: u64, ret: u64) -> Operation {
    Operation {
        output: Output::Value(output.map(str::to_string)),
        ..op(client, OpKind::Get, "x", call, ret)
    }
}

fn cas(client: u64, from: &str, value: &str, swapped: bool, call: u64, ret: u64) -> Operation {
    Operation {
        from: Some(from.to_string()),
        value: Some(value.to_string()),
        output: Output::Swapped(swapped),
        ..op(client, OpKind::Cas, "x", call, ret)
    }
}

/// The operation with an unknown outcome and no return.
fn unknown(mut operation: Operation) -> Operation {
    operation.status = OpStatus::Unknown;
    operation.ret = None;
    operation.output = Output::None;
    operation
}

fn failed(mut operation: Operation) -> Operation {
    operation.status = OpStatus::Fail;
    operation.output = Output::None;
    operation
}

fn on_key(key: &str, mut operation: Operation) -> Operation {
    operation.key = key.to_string();
    operation
}

fn verdict(ops: &[Operation]) -> Verdict {
    check(ops, CheckLimits::default())
}

fn assert_linearizable(ops: &[Operation]) {
    let verdict = verdict(ops);
    assert_eq!(verdict, Verdict::Linearizable, "{verdict:#?}");
}

fn assert_not_linearizable(ops: &[Operation]) -> String {
    match verdict(ops) {
        Verdict::NotLinearizable { key, detail } => {
            assert_eq!(key, "x");
            detail
        }
        other => panic!("expected NotLinearizable, got {other:?}"),
    }
}

#[test]
fn empty_history_is_linearizable() {
    assert_linearizable(&[]);
}

#[test]
fn sequential_history_is_linearizable() {
    assert_linearizable(&[
        get(0, None, 0, 1),
        put(0, "1", 2, 3),
        get(1, Some("1"), 4, 5),
        append(1, "a", 6, 7),
        cas(0, "1a", "2", true, 8, 9),
        cas(1, "1a", "3", false, 10, 11),
        get(0, Some("2"), 12, 13),
    ]);
}

#[test]
fn get_overlapping_a_put_may_see_the_old_or_the_new_value() {
    let before = put(0, "1", 0, 5);
    let overlapping = put(0, "2", 10, 20);
    assert_linearizable(&[
        before.clone(),
        overlapping.clone(),
        get(1, Some("1"), 12, 18),
    ]);
    assert_linearizable(&[before, overlapping, get(1, Some("2"), 12, 18)]);
}

#[test]
fn operations_whose_times_tie_are_concurrent() {
    // The put returns at 10 and the get is called at 10: neither precedes the other, so the
    // get may still see the old value.
    assert_linearizable(&[put(0, "1", 0, 10), get(1, None, 10, 12)]);
    assert_not_linearizable(&[put(0, "1", 0, 10), get(1, None, 11, 12)]);
}

#[test]
fn stale_read_after_a_completed_put_is_not_linearizable() {
    let detail = assert_not_linearizable(&[
        put(0, "1", 0, 10),
        put(0, "2", 20, 30),
        get(1, Some("1"), 40, 50),
    ]);
    // The report names the offending read, its only writer, and the write that overwrote it.
    assert!(detail.starts_with("a stale read"), "{detail}");
    assert!(detail.contains("line 3: client 1 get"), "{detail}");
    assert!(detail.contains("read \"1\""), "{detail}");
    assert!(detail.contains("line 2: client 0 put"), "{detail}");
}

#[test]
fn read_of_a_value_never_written_is_not_linearizable() {
    assert_not_linearizable(&[put(0, "1", 0, 10), get(1, Some("9"), 5, 15)]);
}

#[test]
fn lost_write_is_not_linearizable() {
    // Both appends completed, yet the read sees only one of them.
    assert_not_linearizable(&[
        append(0, "a", 0, 10),
        append(1, "b", 5, 15),
        get(2, Some("a"), 20, 30),
    ]);
    // Two puts completed and a later read sees the one that must have been overwritten.
    assert_not_linearizable(&[
        put(0, "1", 0, 10),
        put(1, "2", 5, 15),
        get(2, Some("2"), 20, 30),
        get(2, Some("1"), 31, 40),
    ]);
}

#[test]
fn cas_on_an_absent_key_never_swaps() {
    assert_linearizable(&[cas(0, "", "1", false, 0, 10), get(0, None, 11, 12)]);
    assert_not_linearizable(&[cas(0, "", "1", true, 0, 10)]);
    assert_not_linearizable(&[cas(0, "0", "1", true, 0, 10)]);
}

#[test]
fn cas_output_must_say_whether_it_swapped() {
    // Equal to `from`: it must swap, and the new value must be visible.
    assert_linearizable(&[
        put(0, "1", 0, 1),
        cas(0, "1", "2", true, 2, 3),
        get(0, Some("2"), 4, 5),
    ]);
    assert_not_linearizable(&[put(0, "1", 0, 1), cas(0, "1", "2", false, 2, 3)]);
    assert_not_linearizable(&[
        put(0, "1", 0, 1),
        cas(0, "1", "2", true, 2, 3),
        get(0, Some("1"), 4, 5),
    ]);
    // Different from `from`: it must not swap, and the value stays.
    assert_not_linearizable(&[put(0, "1", 0, 1), cas(0, "3", "2", true, 2, 3)]);
    assert_linearizable(&[
        put(0, "1", 0, 1),
        cas(0, "3", "2", false, 2, 3),
        get(0, Some("1"), 4, 5),
    ]);
}

#[test]
fn concurrent_cas_only_one_of_two_can_win() {
    assert_linearizable(&[
        put(0, "1", 0, 1),
        cas(1, "1", "a", true, 2, 10),
        cas(2, "1", "b", false, 2, 10),
        get(0, Some("a"), 11, 12),
    ]);
    assert_not_linearizable(&[
        put(0, "1", 0, 1),
        cas(1, "1", "a", true, 2, 10),
        cas(2, "1", "b", true, 2, 10),
    ]);
}

#[test]
fn appends_follow_real_time_order() {
    // An append to an absent key treats it as "".
    let sequential = [append(0, "a", 0, 10), append(1, "b", 20, 30)];
    assert_linearizable(&[
        sequential[0].clone(),
        sequential[1].clone(),
        get(2, Some("ab"), 40, 50),
    ]);
    assert_not_linearizable(&[
        sequential[0].clone(),
        sequential[1].clone(),
        get(2, Some("ba"), 40, 50),
    ]);
    // Concurrent appends may land in either order, but every later read agrees on it.
    let concurrent = [append(0, "a", 0, 10), append(1, "b", 5, 15)];
    assert_linearizable(&[
        concurrent[0].clone(),
        concurrent[1].clone(),
        get(2, Some("ba"), 20, 30),
    ]);
    assert_linearizable(&[
        concurrent[0].clone(),
        concurrent[1].clone(),
        get(2, Some("ab"), 20, 30),
    ]);
    assert_not_linearizable(&[
        concurrent[0].clone(),
        concurrent[1].clone(),
        get(2, Some("ab"), 20, 30),
        get(2, Some("ba"), 31, 40),
    ]);
}

#[test]
fn unknown_put_that_shows_up_later_is_linearizable() {
    assert_linearizable(&[
        put(0, "1", 0, 10),
        unknown(put(1, "2", 20, 0)),
        get(0, Some("1"), 30, 40),
        get(0, Some("2"), 1000, 1010),
    ]);
}

#[test]
fn unknown_put_that_never_shows_up_is_linearizable() {
    assert_linearizable(&[
        put(0, "1", 0, 10),
        unknown(put(1, "2", 20, 0)),
        get(0, Some("1"), 30, 40),
        get(0, Some("1"), 1000, 1010),
    ]);
}

#[test]
fn unknown_put_cannot_take_effect_before_its_call() {
    assert_not_linearizable(&[
        put(0, "1", 0, 10),
        get(0, Some("2"), 11, 19),
        unknown(put(1, "2", 20, 0)),
    ]);
}

#[test]
fn unknown_put_takes_effect_once_and_stays_overwritten() {
    // It may have happened, but only once: after a later put overwrote it, reading it back
    // again means it happened twice.
    assert_not_linearizable(&[
        unknown(put(1, "2", 0, 0)),
        get(0, Some("2"), 10, 20),
        put(0, "3", 30, 40),
        get(0, Some("2"), 50, 60),
    ]);
}

#[test]
fn unknown_cas_output_is_unconstrained() {
    assert_linearizable(&[
        put(0, "1", 0, 10),
        unknown(cas(1, "1", "2", false, 20, 0)),
        get(0, Some("2"), 30, 40),
    ]);
    assert_linearizable(&[
        put(0, "1", 0, 10),
        unknown(cas(1, "1", "2", true, 20, 0)),
        get(0, Some("1"), 30, 40),
    ]);
}

#[test]
fn failed_put_whose_value_is_read_is_not_linearizable() {
    assert_not_linearizable(&[failed(put(0, "1", 0, 10)), get(1, Some("1"), 20, 30)]);
    assert_linearizable(&[failed(put(0, "1", 0, 10)), get(1, None, 20, 30)]);
}

#[test]
fn unknown_gets_are_ignored_whatever_their_output() {
    let mut ops = vec![put(0, "1", 0, 1)];
    // One client times out on a thousand reads in a row; they cannot change the verdict.
    for index in 0..1000 {
        let call = 10 + index;
        ops.push(Operation {
            status: OpStatus::Unknown,
            ret: None,
            output: Output::None,
            ..get(1, None, call, call)
        });
    }
    ops.push(get(0, Some("1"), 2000, 2001));
    assert_linearizable(&ops);
}

#[test]
fn keys_are_checked_independently_and_the_failing_key_is_named() {
    // Each key on its own is fine, however the other key's operations interleave.
    assert_linearizable(&[
        on_key("a", put(0, "1", 0, 10)),
        on_key("b", put(1, "1", 5, 15)),
        on_key("a", get(2, Some("1"), 20, 30)),
        on_key("b", get(3, Some("1"), 20, 30)),
    ]);
    let verdict = verdict(&[
        on_key("a", put(0, "1", 0, 10)),
        on_key("b", put(1, "1", 5, 15)),
        on_key("a", get(2, Some("1"), 20, 30)),
        on_key("b", get(3, None, 20, 30)),
    ]);
    match verdict {
        Verdict::NotLinearizable { key, detail } => {
            assert_eq!(key, "b");
            assert!(detail.contains("line 4: client 3 get"), "{detail}");
        }
        other => panic!("expected NotLinearizable, got {other:?}"),
    }
}

#[test]
fn step_budget_turns_a_long_search_into_inconclusive() {
    // Many concurrent appends then a read that matches no order (yet ends with one of the
    // suffixes, so that it has a possible writer): proving that takes many steps, so a budget
    // of a few steps gives up instead.
    let mut ops: Vec<Operation> = (0..8)
        .map(|client| append(client, &client.to_string(), 0, 100))
        .collect();
    ops.push(get(8, Some("77"), 200, 300));
    assert_eq!(
        check(&ops, CheckLimits { steps_max: 10 }),
        Verdict::Inconclusive {
            key: "x".to_string()
        }
    );
    assert!(matches!(
        check(&ops, CheckLimits::default()),
        Verdict::NotLinearizable { .. }
    ));
}

#[test]
#[should_panic(expected = "check needs a valid history")]
fn an_invalid_history_is_a_bug_upstream() {
    let mut ok_get_without_output = get(0, None, 0, 1);
    ok_get_without_output.output = Output::None;
    let _ = check(&[ok_get_without_output], CheckLimits::default());
}

fn append_with_length(client: u64, suffix: &str, length: u64, call: u64, ret: u64) -> Operation {
    Operation {
        output: Output::Length(length),
        ..append(client, suffix, call, ret)
    }
}

#[test]
fn an_append_must_report_the_length_it_left() {
    // Two concurrent appends: the lengths say which went first.
    assert_linearizable(&[
        append_with_length(0, "ab", 4, 0, 10),
        append_with_length(1, "cd", 2, 0, 10),
        get(2, Some("cdab"), 20, 30),
    ]);
    // The same lengths contradict the order the read saw.
    assert_not_linearizable(&[
        append_with_length(0, "ab", 4, 0, 10),
        append_with_length(1, "cd", 2, 0, 10),
        get(2, Some("abcd"), 20, 30),
    ]);
    // A length no order gives.
    assert_not_linearizable(&[put(0, "x", 0, 10), append_with_length(1, "y", 1, 20, 30)]);
}
