//! Webhook subscriptions and their delivery state, written once against
//! [`Tx`]: each change with the event it calls for.

use super::kind::{WebhookChange, WebhookEvent};
use crate::error::Error;
use crate::model::{DeliveryRecord, WebhookRecord, WebhookState};
use crate::store::Tx;

/// Writes the event of a change to a webhook subscription, in the change's
/// transaction: its owner agent's event, or (no owner) the operator's. The
/// URL stays out: it may carry the receiver's token.
fn emit_change(
    tx: &mut dyn Tx,
    which: WebhookEvent,
    webhook: &WebhookRecord,
    state: WebhookState,
    now_ms: i64,
) -> Result<(), Error> {
    let change = WebhookChange {
        webhook_id: webhook.id.clone(),
        owner: webhook.owner.clone(),
        types: webhook.types.clone(),
        failures: state.failures,
        paused: state.paused,
    };
    super::emit(tx, &which.event(change), now_ms)
}

/// The event a change of a webhook's delivery state calls for, if any.
fn state_change(before: WebhookState, after: WebhookState) -> Option<WebhookEvent> {
    match (before.paused, after.paused) {
        (false, true) => Some(WebhookEvent::Paused),
        (true, false) => Some(WebhookEvent::Resumed),
        _ => None,
    }
}

/// Stores a webhook with its `webhook.created` event. Delivery starts after
/// the newest numbered event (the answer has the cursor it got); a new
/// webhook is not told of itself (see `webhook::is_own_creation`).
pub fn create_webhook(tx: &mut dyn Tx, webhook: WebhookRecord) -> Result<WebhookRecord, Error> {
    emit_change(tx, WebhookEvent::Created, &webhook, webhook.state, webhook.created_at_ms)?;
    let after_event_id = tx.newest_event_id()?;
    let webhook = WebhookRecord { state: WebhookState { after_event_id, ..webhook.state }, ..webhook };
    tx.insert_webhook(&webhook)?;
    Ok(webhook)
}

/// Deletes a webhook and its log, with its `webhook.deleted` event;
/// `false` if there was none.
pub fn delete_webhook(tx: &mut dyn Tx, id: &str, now_ms: i64) -> Result<bool, Error> {
    let Some(webhook) = tx.webhook(id)? else { return Ok(false) };
    tx.delete_webhook(id)?;
    emit_change(tx, WebhookEvent::Deleted, &webhook, webhook.state, now_ms)?;
    Ok(true)
}

/// Sets a webhook's delivery state, with the event of a pause or a resume.
/// The webhook is read first (by its key) to tell a change.
pub fn set_webhook_state(tx: &mut dyn Tx, id: &str, state: WebhookState, now_ms: i64) -> Result<(), Error> {
    let webhook = tx.webhook(id)?.ok_or(Error::NotFound("webhook"))?;
    tx.save_webhook_state(id, &state)?;
    match state_change(webhook.state, state) {
        Some(which) => emit_change(tx, which, &webhook, state, now_ms),
        None => Ok(()),
    }
}

/// Logs an attempt and sets the webhook's new state, in one transaction.
pub fn record_delivery(tx: &mut dyn Tx, delivery: DeliveryRecord, state: WebhookState) -> Result<(), Error> {
    tx.insert_delivery(&delivery)?;
    set_webhook_state(tx, &delivery.webhook_id, state, delivery.at_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_pause_or_a_resume_is_an_event() {
        let running = WebhookState::default();
        let paused = WebhookState { paused: true, failures: 5, ..running };
        assert_eq!(state_change(running, paused), Some(WebhookEvent::Paused));
        assert_eq!(state_change(paused, running), Some(WebhookEvent::Resumed));
        assert_eq!(state_change(running, WebhookState { failures: 2, ..running }), None);
        assert_eq!(state_change(paused, paused), None);
    }
}
