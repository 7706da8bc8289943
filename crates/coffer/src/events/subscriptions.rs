//! Webhook subscriptions and their delivery state, written once against
//! [`Tx`]: each change with the event it calls for.

use crate::error::Error;
use crate::model::{DeliveryRecord, WebhookRecord, WebhookState};
use crate::store::{Tx, emit_webhook_event, webhook_state_event};

/// Stores a webhook with its `webhook.created` event. Delivery starts after
/// the newest event, this one included: a new webhook is not told of
/// itself (the answer has the cursor it got).
pub fn create_webhook(tx: &mut dyn Tx, webhook: WebhookRecord) -> Result<WebhookRecord, Error> {
    emit_webhook_event(tx, "webhook.created", &webhook, webhook.state, webhook.created_at_ms)?;
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
    emit_webhook_event(tx, "webhook.deleted", &webhook, webhook.state, now_ms)?;
    Ok(true)
}

/// Sets a webhook's delivery state, with the event of a pause or a resume.
/// The webhook is read first (by its key) to tell a change.
pub fn set_webhook_state(tx: &mut dyn Tx, id: &str, state: WebhookState, now_ms: i64) -> Result<(), Error> {
    let webhook = tx.webhook(id)?.ok_or(Error::NotFound("webhook"))?;
    tx.save_webhook_state(id, &state)?;
    match webhook_state_event(webhook.state, state) {
        Some(kind) => emit_webhook_event(tx, kind, &webhook, state, now_ms),
        None => Ok(()),
    }
}

/// Logs an attempt and sets the webhook's new state, in one transaction.
pub fn record_delivery(tx: &mut dyn Tx, delivery: DeliveryRecord, state: WebhookState) -> Result<(), Error> {
    tx.insert_delivery(&delivery)?;
    set_webhook_state(tx, &delivery.webhook_id, state, delivery.at_ms)
}
