//! The shape both of the crate's tables share: an entry per state, event and guard, that
//! either runs steps and moves on, or is ignored for a stated reason. Each table names its
//! own states, events, guards and steps (`S`, `E`, `G`, `St`).

/// Where a row leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Next<S> {
    /// Stay in the current state (its timers keep running).
    Stay,
    /// Go to the state.
    To(S),
}

/// What a table entry does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome<S, St: 'static> {
    /// Run `steps`, then go to `next`.
    Row {
        /// The state after the steps.
        next: Next<S>,
        /// The steps, in order.
        steps: &'static [St],
    },
    /// Nothing happens, for the reason given.
    Ignore(&'static str),
}

/// One entry of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Entry<S, E, G, St: 'static> {
    /// The state the entry applies in.
    pub state: S,
    /// The event it applies to.
    pub event: E,
    /// Condition picking this entry among the entries of the same state and event.
    pub guard: G,
    /// What happens.
    pub outcome: Outcome<S, St>,
}

/// An entry that runs `steps` and goes to `next`.
pub(crate) const fn row<S, E, G, St>(
    state: S,
    event: E,
    guard: G,
    next: Next<S>,
    steps: &'static [St],
) -> Entry<S, E, G, St> {
    Entry {
        state,
        event,
        guard,
        outcome: Outcome::Row { next, steps },
    }
}

/// An entry that does nothing, saying why.
pub(crate) const fn ignore_when<S, E, G, St>(
    state: S,
    event: E,
    guard: G,
    why: &'static str,
) -> Entry<S, E, G, St> {
    Entry {
        state,
        event,
        guard,
        outcome: Outcome::Ignore(why),
    }
}
