//! A linearizability checker for single-key register histories: the
//! Wing–Gong search with Lowe's memoization, in the shape of porcupine.
//!
//! A history is split per key (operations touch one key each, so the whole
//! history is linearizable iff each key's is). For one key the checker
//! keeps the call and return events in a doubly linked list ordered by
//! time and searches for an order of operations that respects real time
//! (an operation that returned before another was invoked comes first) and
//! the register's sequential semantics. Linearizing an operation *lifts*
//! its call and return out of the list; reaching a return whose call is
//! still in the list means the last choice was wrong: backtrack. A cache of
//! (set of linearized operations, register state) prunes configurations
//! already explored, which makes the search practical.
//!
//! Operations whose outcome is unknown (a timeout, a crash of the node the
//! client talked to) may have taken effect at any time after their
//! invocation, or never: their return is placed at infinity, and their
//! effect is computed from the state when they are linearized. An unknown
//! read has no effect and is dropped. Operations known to have failed
//! (refused before reaching the log) are not given to the checker.

use std::collections::{BTreeMap, HashSet};

use crate::kv::{Key, Operation, Output, Value};

/// One operation as the checker sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckedOperation {
    /// What was asked.
    pub operation: Operation,
    /// When it was invoked (a global event number).
    pub invoked_at: u64,
    /// When it returned; `None` when the client never learnt the outcome
    /// (it may take effect at any time after its invocation, or never).
    pub completed_at: Option<u64>,
    /// Its output, when known (a completion, or an unknown request the
    /// simulator saw applied); `None`: whatever the state gives.
    pub output: Option<Output>,
}

/// The verdict on a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every key's history is linearizable.
    Linearizable,
    /// A key's history has no linearization.
    Violation {
        /// The key.
        key: Key,
        /// The most operations of that key the search could linearize.
        linearized_max: usize,
        /// The operations of the key that the checker considered.
        operations: usize,
        /// An operation that could not be placed at the search's deepest
        /// point (the return that forced the last backtrack there).
        blocked: CheckedOperation,
    },
    /// The search gave up after its step budget (not a pass).
    Inconclusive {
        /// The key whose search ran out.
        key: Key,
    },
}

/// The most search steps per key before the checker gives up.
pub const SEARCH_STEPS_MAX: u64 = 20_000_000;

/// Checks a whole history: splits it per key and checks each key.
pub fn check_history(operations: &[CheckedOperation]) -> Verdict {
    let mut per_key: BTreeMap<Key, Vec<CheckedOperation>> = BTreeMap::new();
    for operation in operations {
        per_key
            .entry(operation.operation.key())
            .or_default()
            .push(*operation);
    }
    for (key, operations) in per_key {
        let verdict = check_key(key, &operations, SEARCH_STEPS_MAX);
        if verdict != Verdict::Linearizable {
            return verdict;
        }
    }
    Verdict::Linearizable
}

/// The register's state: the key's value, `None` when absent.
type State = Option<Value>;

/// The register's sequential specification: the state after `operation`
/// with `output` (`None`: unknown), or `None` if that output is impossible.
fn step(state: State, operation: &Operation, output: Option<Output>) -> Option<State> {
    match (*operation, output) {
        (Operation::Put { value, .. }, None | Some(Output::Written)) => Some(Some(value)),
        (Operation::Get { .. }, None) => Some(state),
        (Operation::Get { .. }, Some(Output::Value(read))) => (read == state).then_some(state),
        (Operation::Cas { expected, new, .. }, output) => {
            let succeeds = state == expected;
            match output {
                None => Some(if succeeds { Some(new) } else { state }),
                Some(Output::CasSucceeded(claimed)) if claimed == succeeds => {
                    Some(if succeeds { Some(new) } else { state })
                }
                Some(_) => None,
            }
        }
        _ => None,
    }
}

const NONE: usize = usize::MAX;

/// The event list: `Call`s and `Return`s linked in time order, with a head
/// sentinel at index `events.len()`.
struct EventList {
    /// For each event: the operation and whether it is the call.
    events: Vec<(usize, bool)>,
    /// For each call event, its return event (and the reverse).
    matching: Vec<usize>,
    next: Vec<usize>,
    previous: Vec<usize>,
}

impl EventList {
    fn new(operations: &[CheckedOperation]) -> Self {
        // (time, is_return, operation): unknown returns go to infinity; at
        // equal times calls come first (a tie only happens at infinity).
        let mut timed: Vec<(u64, bool, usize)> = Vec::with_capacity(operations.len() * 2);
        for (position, operation) in operations.iter().enumerate() {
            timed.push((operation.invoked_at, false, position));
            let returned_at = operation.completed_at.unwrap_or(u64::MAX);
            assert!(
                returned_at > operation.invoked_at,
                "an operation returned before it was invoked"
            );
            timed.push((returned_at, true, position));
        }
        timed.sort_unstable();
        let count = timed.len();
        let events: Vec<(usize, bool)> = timed.iter().map(|&(_, is_return, op)| (op, !is_return)).collect();
        let mut call_of = vec![NONE; operations.len()];
        let mut matching = vec![NONE; count];
        for (position, &(op, is_call)) in events.iter().enumerate() {
            if is_call {
                call_of[op] = position;
            } else {
                matching[call_of[op]] = position;
                matching[position] = call_of[op];
            }
        }
        let head = count;
        let mut next = vec![NONE; count + 1];
        let mut previous = vec![NONE; count + 1];
        let mut last = head;
        for (position, previous_of_position) in previous.iter_mut().enumerate().take(count) {
            next[last] = position;
            *previous_of_position = last;
            last = position;
        }
        EventList {
            events,
            matching,
            next,
            previous,
        }
    }

    fn head(&self) -> usize {
        self.events.len()
    }

    fn unlink(&mut self, entry: usize) {
        let (previous, next) = (self.previous[entry], self.next[entry]);
        self.next[previous] = next;
        if next != NONE {
            self.previous[next] = previous;
        }
    }

    fn relink(&mut self, entry: usize) {
        let (previous, next) = (self.previous[entry], self.next[entry]);
        self.next[previous] = entry;
        if next != NONE {
            self.previous[next] = entry;
        }
    }

    /// Removes a call and its return from the list.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.matching[call]);
    }

    /// Puts back what [`EventList::lift`] removed, in reverse order.
    fn unlift(&mut self, call: usize) {
        self.relink(self.matching[call]);
        self.relink(call);
    }
}

/// A fixed-size set of operation positions.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct BitSet(Vec<u64>);

impl BitSet {
    fn new(size: usize) -> Self {
        BitSet(vec![0; size.div_ceil(64)])
    }

    fn set(&mut self, position: usize) {
        self.0[position / 64] |= 1 << (position % 64);
    }

    fn clear(&mut self, position: usize) {
        self.0[position / 64] &= !(1 << (position % 64));
    }
}

/// Checks the history of one key, giving up after `steps_max` steps.
pub fn check_key(key: Key, operations: &[CheckedOperation], steps_max: u64) -> Verdict {
    // Unknown reads have no effect: leave them out.
    let operations: Vec<CheckedOperation> = operations
        .iter()
        .filter(|operation| operation.operation.is_write() || operation.completed_at.is_some())
        .copied()
        .collect();
    let mut list = EventList::new(&operations);
    let head = list.head();
    let mut linearized = BitSet::new(operations.len());
    let mut cache: HashSet<(BitSet, State)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut state: State = None;
    let mut deepest = (0usize, None::<usize>);
    let mut entry = list.next[head];
    let mut steps = 0u64;
    while list.next[head] != NONE {
        steps += 1;
        if steps > steps_max {
            return Verdict::Inconclusive { key };
        }
        debug_assert_ne!(entry, NONE, "the list always ends with a return");
        let (position, is_call) = list.events[entry];
        if is_call {
            let operation = &operations[position];
            if let Some(new_state) = step(state, &operation.operation, operation.output) {
                linearized.set(position);
                if cache.insert((linearized.clone(), new_state)) {
                    stack.push((entry, state));
                    state = new_state;
                    list.lift(entry);
                    entry = list.next[head];
                    continue;
                }
                linearized.clear(position);
            }
            entry = list.next[entry];
        } else {
            if stack.len() >= deepest.0 {
                deepest = (stack.len(), Some(position));
            }
            let Some((call, previous_state)) = stack.pop() else {
                return Verdict::Violation {
                    key,
                    linearized_max: deepest.0,
                    operations: operations.len(),
                    blocked: operations[deepest.1.unwrap_or(position)],
                };
            };
            state = previous_state;
            linearized.clear(list.events[call].0);
            list.unlift(call);
            entry = list.next[call];
        }
    }
    Verdict::Linearizable
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: Key = 0;

    fn put(value: Value, invoked_at: u64, completed_at: Option<u64>) -> CheckedOperation {
        CheckedOperation {
            operation: Operation::Put { key: KEY, value },
            invoked_at,
            completed_at,
            output: completed_at.map(|_| Output::Written),
        }
    }

    fn get(read: Option<Value>, invoked_at: u64, completed_at: u64) -> CheckedOperation {
        CheckedOperation {
            operation: Operation::Get { key: KEY },
            invoked_at,
            completed_at: Some(completed_at),
            output: Some(Output::Value(read)),
        }
    }

    fn cas(
        expected: Option<Value>,
        new: Value,
        succeeded: Option<bool>,
        invoked_at: u64,
        completed_at: u64,
    ) -> CheckedOperation {
        CheckedOperation {
            operation: Operation::Cas {
                key: KEY,
                expected,
                new,
            },
            invoked_at,
            completed_at: succeeded.map(|_| completed_at),
            output: succeeded.map(Output::CasSucceeded),
        }
    }

    fn is_linearizable(history: &[CheckedOperation]) -> bool {
        match check_history(history) {
            Verdict::Linearizable => true,
            Verdict::Violation { .. } => false,
            Verdict::Inconclusive { .. } => panic!("inconclusive on a tiny history"),
        }
    }

    #[test]
    fn empty_and_sequential_histories_are_linearizable() {
        assert!(is_linearizable(&[]));
        assert!(is_linearizable(&[get(None, 1, 2)]));
        assert!(is_linearizable(&[
            put(1, 1, Some(2)),
            get(Some(1), 3, 4),
            put(2, 5, Some(6)),
            get(Some(2), 7, 8)
        ]));
        assert!(is_linearizable(&[
            cas(None, 4, Some(true), 1, 2),
            cas(None, 5, Some(false), 3, 4),
            cas(Some(4), 6, Some(true), 5, 6),
            get(Some(6), 7, 8),
        ]));
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_a_violation() {
        // put(1) completes, put(2) completes, then a read returns 1.
        let history = [put(1, 1, Some(2)), put(2, 3, Some(4)), get(Some(1), 5, 6)];
        match check_history(&history) {
            Verdict::Violation { key, operations, .. } => {
                assert_eq!((key, operations), (KEY, 3));
            }
            other => panic!("expected a violation, got {other:?}"),
        }
        // A read of a value nobody wrote.
        assert!(!is_linearizable(&[put(1, 1, Some(2)), get(Some(7), 3, 4)]));
        // A read of the initial value after a completed write.
        assert!(!is_linearizable(&[put(1, 1, Some(2)), get(None, 3, 4)]));
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        // put(1) and put(2) overlap; reads after both may see either one,
        // but two later reads cannot disagree in the "wrong" direction.
        assert!(is_linearizable(&[
            put(1, 1, Some(4)),
            put(2, 2, Some(3)),
            get(Some(1), 5, 6)
        ]));
        assert!(is_linearizable(&[
            put(1, 1, Some(4)),
            put(2, 2, Some(3)),
            get(Some(2), 5, 6)
        ]));
        assert!(!is_linearizable(&[
            put(1, 1, Some(4)),
            put(2, 2, Some(3)),
            get(Some(2), 5, 6),
            get(Some(1), 7, 8),
        ]));
        // A read overlapping a write sees the old or the new value.
        assert!(is_linearizable(&[
            put(1, 1, Some(2)),
            put(2, 3, Some(6)),
            get(Some(1), 4, 5)
        ]));
        assert!(is_linearizable(&[
            put(1, 1, Some(2)),
            put(2, 3, Some(6)),
            get(Some(2), 4, 5)
        ]));
        // ... but once it has seen the new value, a later read cannot see
        // the old one (the new/old inversion).
        assert!(!is_linearizable(&[
            put(1, 1, Some(2)),
            put(2, 3, Some(10)),
            get(Some(2), 4, 5),
            get(Some(1), 6, 7),
        ]));
    }

    #[test]
    fn unknown_outcomes_may_or_may_not_take_effect() {
        // An unknown put that is later observed.
        assert!(is_linearizable(&[put(1, 1, None), get(Some(1), 5, 6)]));
        // An unknown put that is never observed.
        assert!(is_linearizable(&[put(1, 1, None), get(None, 5, 6)]));
        // Observed, then unobserved: it cannot be undone.
        assert!(!is_linearizable(&[
            put(1, 1, None),
            get(Some(1), 5, 6),
            get(None, 7, 8)
        ]));
        // An unknown put cannot take effect before it was invoked.
        assert!(!is_linearizable(&[get(Some(1), 1, 2), put(1, 3, None)]));
        // An unknown CAS takes effect only if its comparison holds.
        assert!(is_linearizable(&[
            put(3, 1, Some(2)),
            cas(Some(3), 4, None, 3, 0),
            get(Some(4), 5, 6)
        ]));
        assert!(!is_linearizable(&[
            put(3, 1, Some(2)),
            cas(Some(9), 4, None, 3, 0),
            get(Some(4), 5, 6)
        ]));
    }

    #[test]
    fn an_unknown_return_with_a_known_output_is_still_constrained() {
        // The simulator saw the unknown CAS apply and fail: it cannot be
        // what made the value 4.
        let mut failed_cas = cas(Some(3), 4, None, 3, 0);
        failed_cas.output = Some(Output::CasSucceeded(false));
        assert!(!is_linearizable(&[
            put(3, 1, Some(2)),
            failed_cas,
            get(Some(4), 5, 6)
        ]));
        failed_cas.output = Some(Output::CasSucceeded(true));
        assert!(is_linearizable(&[
            put(3, 1, Some(2)),
            failed_cas,
            get(Some(4), 5, 6)
        ]));
    }

    #[test]
    fn cas_results_must_match_the_state() {
        // The CAS claims success but the value was 2, not 1.
        assert!(!is_linearizable(&[
            put(2, 1, Some(2)),
            cas(Some(1), 5, Some(true), 3, 4)
        ]));
        // The CAS claims failure although the comparison held.
        assert!(!is_linearizable(&[
            put(1, 1, Some(2)),
            cas(Some(1), 5, Some(false), 3, 4)
        ]));
        // Two concurrent CASes from the same value: only one may win.
        assert!(is_linearizable(&[
            put(0, 1, Some(2)),
            cas(Some(0), 1, Some(true), 3, 6),
            cas(Some(0), 2, Some(false), 4, 5),
            get(Some(1), 7, 8),
        ]));
        assert!(!is_linearizable(&[
            put(0, 1, Some(2)),
            cas(Some(0), 1, Some(true), 3, 6),
            cas(Some(0), 2, Some(true), 4, 5),
        ]));
    }

    #[test]
    fn keys_are_checked_independently() {
        let mut other_key = put(9, 1, Some(2));
        other_key.operation = Operation::Put { key: 1, value: 9 };
        // Key 0 is never written: reading None is right even though key 1
        // holds 9.
        assert!(is_linearizable(&[other_key, get(None, 3, 4)]));
        let mut wrong = get(Some(9), 3, 4);
        wrong.operation = Operation::Get { key: 2 };
        assert!(matches!(
            check_history(&[other_key, wrong]),
            Verdict::Violation { key: 2, .. }
        ));
    }

    #[test]
    fn many_concurrent_clients_stay_tractable() {
        // 6 clients, 300 overlapping puts and reads that are linearizable
        // by construction (each read sees the latest completed put in a
        // sequential schedule laid out with overlaps): the cache keeps the
        // search fast.
        let mut history = Vec::new();
        let mut time = 1;
        for round in 0..50u64 {
            for client in 0..5u64 {
                history.push(put(round * 10 + client, time, Some(time + 11)));
                time += 2;
            }
            // All five puts overlap; a read after them sees one of them.
            history.push(get(Some(round * 10 + 4), time + 12, time + 13));
            time += 14;
        }
        assert!(is_linearizable(&history));
        // The unconstrained reads make all orders of the puts possible, yet
        // the check must finish under its budget.
        let verdict = check_key(KEY, &history, 1_000_000);
        assert_eq!(verdict, Verdict::Linearizable);
    }
}
