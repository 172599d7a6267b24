//! A linearizability check of a recorded history (Wing and Gong's search, with the memo of
//! Lowe's refinement): is there one order of the operations, each taking effect at one
//! instant between its call and its return, in which the model answers every operation as
//! the system did? An operation whose outcome is unknown (its client saw a broken
//! connection or a timeout) may take effect anywhere after its call, or not at all.
//!
//! The register here is what a Kubernetes object with optimistic concurrency is: a read
//! returns the value; a compare-and-swap (a PUT carrying the resourceVersion of a read)
//! writes a new, unique value only if the value is still the one read.

use std::collections::HashSet;
use std::time::Instant;

/// One operation on the register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A read; `Some(value)` as answered, `None` when no answer came.
    Read(Option<String>),
    /// A compare-and-swap from `from` to `to`; `Some(applied)` as answered (`false`: a
    /// conflict), `None` when no answer came.
    Cas {
        from: String,
        to: String,
        applied: Option<bool>,
    },
}

/// An operation as one client saw it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub client: usize,
    pub call: Instant,
    /// `None` when the outcome is unknown.
    pub ret: Option<Instant>,
    pub op: Op,
}

/// The register's states after `op` from `state`: none if `op`'s answer is impossible there.
fn step(state: &str, op: &Op) -> Vec<String> {
    match op {
        Op::Read(Some(v)) => {
            if v == state {
                vec![state.to_string()]
            } else {
                vec![]
            }
        }
        Op::Read(None) => vec![state.to_string()],
        Op::Cas {
            from,
            to,
            applied: Some(true),
        } => {
            if from == state {
                vec![to.clone()]
            } else {
                vec![]
            }
        }
        Op::Cas {
            from,
            applied: Some(false),
            ..
        } => {
            if from == state {
                vec![]
            } else {
                vec![state.to_string()]
            }
        }
        Op::Cas {
            from,
            to,
            applied: None,
        } => {
            if from == state {
                vec![to.clone(), state.to_string()]
            } else {
                vec![state.to_string()]
            }
        }
    }
}

struct Search<'a> {
    /// Sorted by call.
    history: &'a [Entry],
    done: Vec<bool>,
    /// `done` as bits, the memo's key.
    bits: Vec<u64>,
    /// Operations with an answer not yet taken.
    answered_left: usize,
    /// (operations taken, state) pairs already searched without success.
    seen: HashSet<(Vec<u64>, String)>,
}

impl Search<'_> {
    fn take(&mut self, i: usize, done: bool) {
        self.done[i] = done;
        self.bits[i / 64] ^= 1 << (i % 64);
        if self.history[i].ret.is_some() {
            if done {
                self.answered_left -= 1;
            } else {
                self.answered_left += 1;
            }
        }
    }

    /// Searches on from `state`; every operation before `from` is taken.
    fn run(&mut self, state: &str, mut from: usize) -> bool {
        // Operations with an unknown outcome may all be left until the end, not applied.
        if self.answered_left == 0 {
            return true;
        }
        while self.done[from] {
            from += 1;
        }
        // The next to take effect must have been called before any pending one returned;
        // calls are sorted, and a return comes after its call, so the scan can stop there.
        let mut first_return: Option<Instant> = None;
        let mut candidates = Vec::new();
        for i in from..self.history.len() {
            let entry = &self.history[i];
            if first_return.is_some_and(|r| entry.call > r) {
                break;
            }
            if self.done[i] {
                continue;
            }
            candidates.push(i);
            if let Some(r) = entry.ret {
                first_return = Some(first_return.map_or(r, |f| f.min(r)));
            }
        }
        for i in candidates {
            for next in step(state, &self.history[i].op) {
                self.take(i, true);
                let fresh = self.seen.insert((self.bits.clone(), next.clone()));
                if fresh && self.run(&next, from) {
                    return true;
                }
                self.take(i, false);
            }
        }
        false
    }
}

/// Whether `history` is linearizable for a register that starts at `initial`.
pub fn linearizable(initial: &str, history: &[Entry]) -> bool {
    let mut history = history.to_vec();
    history.sort_by_key(|e| e.call);
    let initial = initial.to_string();
    // The search recurses once per operation: a thread with room for long histories.
    std::thread::Builder::new()
        .stack_size(512 << 20)
        .spawn(move || {
            let mut search = Search {
                history: &history,
                done: vec![false; history.len()],
                bits: vec![0; history.len().div_ceil(64)],
                answered_left: history.iter().filter(|e| e.ret.is_some()).count(),
                seen: HashSet::new(),
            };
            search.run(&initial, 0)
        })
        .expect("spawn the checker")
        .join()
        .expect("the checker ran")
}
