//! Payments, by kind: `bolt11` (invoices), `internal` (settling an invoice
//! of this gateway, and held payments), and the `decision` they share.

pub mod bolt11;
pub mod decision;
pub mod internal;
