//! The ticker's phase: one state machine with its transitions in one place.
//!
//! | from | event | to | what the driver does |
//! |---|---|---|---|
//! | `Loading` | the schedule table is loaded | `Standby` | lets the lease task compete |
//! | `Standby` | the lease is won (term `t`) | `TakingOver(t)` | reads every state record |
//! | `TakingOver(t)` | the state records are read | `Leading(t)` | plans catch-up, arms the timeline, fires |
//! | `TakingOver(t)` | reading them failed | `TakingOver(t)` | reads again after a backoff (never exits) |
//! | `TakingOver(t)` / `Leading(t)` | the lease is lost | `Standby` | stops reading; disarms; drops unpublished fires (the successor fires them by catch-up) |
//! | `Leading(t)` | the lease is won again under a new term | `TakingOver(t')` | as lost, then won |
//! | any | anything else | unchanged | — |
//!
//! A deadline that passed without a renewal is not a transition: the phase stays `Leading` and
//! the firing code holds its fires (fenced) until the lease is renewed or lost (see `fence`).

/// Where the ticker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Reading `polos_schedules`; not competing for the lease yet.
    Loading,
    /// Loaded and competing for the lease; not firing.
    Standby,
    /// Holds the lease under this term; reading the state records before firing.
    TakingOver(u64),
    /// Holds the lease under this term and fires.
    Leading(u64),
}

/// Something that moves the phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// The initial load of `polos_schedules` is complete.
    Loaded,
    /// The lease task reports leadership: `Some(term)` while it holds the lease.
    Lease(Option<u64>),
    /// The state records for this term have been read.
    StatesRead(u64),
}

/// What the driver must do on a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing.
    None,
    /// Tell the lease task it may compete.
    Compete,
    /// Start reading the state records (after stopping whatever the previous term did).
    ReadStates,
    /// Plan every schedule and start firing.
    StartFiring,
    /// Stop reading/firing: disarm everything, drop unpublished fires.
    StandDown,
}

impl Phase {
    /// The next phase on `event`, and the action it requires.
    pub fn on(self, event: Event) -> (Phase, Action) {
        use Phase::*;
        match (self, event) {
            (Loading, Event::Loaded) => (Standby, Action::Compete),
            (Standby, Event::Lease(Some(t))) => (TakingOver(t), Action::ReadStates),
            (TakingOver(t) | Leading(t), Event::Lease(Some(u))) if u != t => {
                (TakingOver(u), Action::ReadStates)
            }
            (TakingOver(_) | Leading(_), Event::Lease(None)) => (Standby, Action::StandDown),
            (TakingOver(t), Event::StatesRead(u)) if t == u => (Leading(t), Action::StartFiring),
            (phase, _) => (phase, Action::None),
        }
    }

    /// The term this replica fires (or is about to fire) under.
    pub fn term(self) -> Option<u64> {
        match self {
            Phase::TakingOver(t) | Phase::Leading(t) => Some(t),
            Phase::Loading | Phase::Standby => None,
        }
    }

    /// Whether fires go out.
    pub fn firing(self) -> bool {
        matches!(self, Phase::Leading(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table() {
        use Action as A;
        use Phase::*;
        let cases = [
            (Loading, Event::Loaded, Standby, A::Compete),
            (Loading, Event::Lease(Some(1)), Loading, A::None),
            (Standby, Event::Loaded, Standby, A::None),
            (Standby, Event::Lease(Some(1)), TakingOver(1), A::ReadStates),
            (Standby, Event::Lease(None), Standby, A::None),
            (
                TakingOver(1),
                Event::StatesRead(1),
                Leading(1),
                A::StartFiring,
            ),
            (TakingOver(2), Event::StatesRead(1), TakingOver(2), A::None),
            (TakingOver(1), Event::Lease(None), Standby, A::StandDown),
            (TakingOver(1), Event::Lease(Some(1)), TakingOver(1), A::None),
            (Leading(1), Event::Lease(Some(1)), Leading(1), A::None),
            (Leading(1), Event::Lease(None), Standby, A::StandDown),
            (
                Leading(1),
                Event::Lease(Some(2)),
                TakingOver(2),
                A::ReadStates,
            ),
            (Leading(1), Event::StatesRead(1), Leading(1), A::None),
        ];
        for (from, event, to, action) in cases {
            assert_eq!(from.on(event), (to, action), "{from:?} on {event:?}");
        }
    }

    #[test]
    fn only_leading_fires() {
        assert!(Phase::Leading(3).firing());
        for p in [Phase::Loading, Phase::Standby, Phase::TakingOver(3)] {
            assert!(!p.firing(), "{p:?}");
        }
        assert_eq!(Phase::TakingOver(4).term(), Some(4));
        assert_eq!(Phase::Standby.term(), None);
    }
}
