//! Payments, by kind: `bolt11` (invoices), `internal` (settling an invoice
//! of this gateway, and held payments), `external` (paying out through the
//! Lightning backend, and crediting what comes in), and the `decision` they
//! share.

pub mod bolt11;
pub mod decision;
pub mod external;
pub mod internal;
