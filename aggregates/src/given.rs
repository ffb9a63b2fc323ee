//! Given/when/then harness for aggregate tests: no store, no clock.

use esrs::Aggregate;

pub struct Given<A: Aggregate> {
    state: A::State,
}

pub fn given<A: Aggregate>(events: impl IntoIterator<Item = A::Event>) -> Given<A> {
    let state = events
        .into_iter()
        .fold(A::State::default(), |s, e| A::apply_event(s, e));
    Given { state }
}

impl<A: Aggregate> Given<A>
where
    A::Event: std::fmt::Debug + PartialEq,
    A::Error: std::fmt::Debug + PartialEq,
{
    pub fn when(self, command: A::Command) -> Then<A> {
        Then {
            result: A::handle_command(&self.state, command),
        }
    }
}

pub struct Then<A: Aggregate> {
    result: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> Then<A>
where
    A::Event: std::fmt::Debug + PartialEq,
    A::Error: std::fmt::Debug + PartialEq,
{
    pub fn then(self, expected: Vec<A::Event>) {
        assert_eq!(self.result, Ok(expected));
    }
    pub fn then_err(self, expected: A::Error) {
        assert_eq!(self.result, Err(expected));
    }
    pub fn events(self) -> Vec<A::Event> {
        match self.result {
            Ok(events) => events,
            Err(e) => panic!("expected events, got {e:?}"),
        }
    }
}
