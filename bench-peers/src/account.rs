//! The trivial "account" aggregate, written once and plugged into both libraries.
//!
//! State is `{ exists, count }`. `Open` is refused on an existing account and emits `Opened`;
//! `Touch` is refused on a missing account and emits `Touched { n }` with `n = count + 1`.
//! Events use serde's default (externally tagged) enum form, so they are stored as the JSON
//! `"Opened"` and `{"Touched":{"n":5}}`; the bulk history fills write exactly these shapes.

use std::fmt;

use cqrs_es::event_sink::EventSink;
use serde::{Deserialize, Serialize};

/// Aggregate name shared by both libraries: esrs stores it in the table name
/// (`peer_account_events`), postgres-es in the `aggregate_type` column.
pub const AGGREGATE_NAME: &str = "peer_account";

/// `event_version` reported to cqrs-es for every event.
pub const EVENT_VERSION: &str = "1.0";

/// The aggregate state (also the cqrs-es aggregate itself).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub exists: bool,
    pub count: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountCommand {
    Open,
    Touch,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountEvent {
    Opened,
    Touched { n: u64 },
}

/// A refused command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountError {
    AlreadyOpen,
    NotOpen,
}

impl fmt::Display for AccountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccountError::AlreadyOpen => f.write_str("account already exists"),
            AccountError::NotOpen => f.write_str("account does not exist"),
        }
    }
}

impl std::error::Error for AccountError {}

impl Account {
    /// Decides which events `command` produces against this state.
    pub fn decide(&self, command: AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        match command {
            AccountCommand::Open if self.exists => Err(AccountError::AlreadyOpen),
            AccountCommand::Open => Ok(vec![AccountEvent::Opened]),
            AccountCommand::Touch if !self.exists => Err(AccountError::NotOpen),
            AccountCommand::Touch => Ok(vec![AccountEvent::Touched { n: self.count + 1 }]),
        }
    }

    /// Folds one event into the state.
    pub fn evolve(&mut self, event: AccountEvent) {
        match event {
            AccountEvent::Opened => self.exists = true,
            AccountEvent::Touched { n } => self.count = n,
        }
    }
}

/// The esrs aggregate: a marker type whose state is [`Account`].
pub struct EsrsAccount;

impl esrs::Aggregate for EsrsAccount {
    const NAME: &'static str = AGGREGATE_NAME;
    type State = Account;
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;

    fn handle_command(
        state: &Self::State,
        command: Self::Command,
    ) -> Result<Vec<Self::Event>, Self::Error> {
        state.decide(command)
    }

    fn apply_event(mut state: Self::State, payload: Self::Event) -> Self::State {
        state.evolve(payload);
        state
    }
}

impl cqrs_es::DomainEvent for AccountEvent {
    fn event_type(&self) -> String {
        match self {
            AccountEvent::Opened => "Opened".to_string(),
            AccountEvent::Touched { .. } => "Touched".to_string(),
        }
    }

    fn event_version(&self) -> String {
        EVENT_VERSION.to_string()
    }
}

impl cqrs_es::Aggregate for Account {
    const TYPE: &'static str = AGGREGATE_NAME;
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            // `write` applies the event to `self` as well as collecting it.
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.evolve(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_json_matches_the_bulk_fill_shapes() {
        assert_eq!(
            serde_json::to_string(&AccountEvent::Opened).ok().as_deref(),
            Some("\"Opened\"")
        );
        assert_eq!(
            serde_json::to_string(&AccountEvent::Touched { n: 7 })
                .ok()
                .as_deref(),
            Some("{\"Touched\":{\"n\":7}}")
        );
    }

    #[test]
    fn commands_are_refused_in_the_wrong_state() {
        let mut account = Account::default();
        assert_eq!(
            account.decide(AccountCommand::Touch),
            Err(AccountError::NotOpen)
        );
        account.evolve(AccountEvent::Opened);
        assert_eq!(
            account.decide(AccountCommand::Open),
            Err(AccountError::AlreadyOpen)
        );
        assert_eq!(
            account.decide(AccountCommand::Touch),
            Ok(vec![AccountEvent::Touched { n: 1 }])
        );
    }
}
