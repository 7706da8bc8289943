//! Double-entry ledger rules, with no I/O.
//!
//! Every movement of money is a [`Transfer`]: one debit and one credit of the
//! same amount, so the postings balance by construction. Each account keeps
//! maintained totals (`debits_posted`, `credits_posted`, `debits_pending`) so
//! that a balance check reads two numbers, never a sum over history. The audit
//! recomputes those totals from the transfers and compares.

use crate::amount::{AmountError, MONEY_MAX_MSAT, Msat};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt;

/// A ledger account's number. The system accounts have fixed numbers below
/// [`AccountId::FIRST_WALLET`]; agent wallets are numbered from there on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct AccountId(pub i64);

impl AccountId {
    /// Lightning in and out: its balance is minus the money inside coffer.
    pub const OUTSIDE: AccountId = AccountId(1);
    /// The operator's own funds, from which agents are funded.
    pub const TREASURY: AccountId = AccountId(2);
    /// Routing fees paid to the Lightning Network.
    pub const FEES: AccountId = AccountId(3);
    pub const FIRST_WALLET: i64 = 100;

    pub fn kind(self) -> AccountKind {
        match self {
            AccountId::OUTSIDE => AccountKind::Outside,
            AccountId::TREASURY => AccountKind::Treasury,
            AccountId::FEES => AccountKind::Fees,
            _ => AccountKind::Wallet,
        }
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind() {
            AccountKind::Outside => f.write_str("outside"),
            AccountKind::Treasury => f.write_str("treasury"),
            AccountKind::Fees => f.write_str("fees"),
            AccountKind::Wallet => write!(f, "wallet#{}", self.0),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    Outside,
    Treasury,
    Fees,
    Wallet,
}

impl AccountKind {
    /// Only the outside world may owe coffer money: every other account holds
    /// real funds and never goes below zero.
    pub fn may_go_negative(self) -> bool {
        self == AccountKind::Outside
    }
}

/// Why a transfer was refused. Nothing was changed when one is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LedgerError {
    InsufficientFunds { available: Msat, needed: Msat },
    SameAccount,
    Amount(AmountError),
}

impl From<AmountError> for LedgerError {
    fn from(e: AmountError) -> Self {
        LedgerError::Amount(e)
    }
}

impl fmt::Display for LedgerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerError::InsufficientFunds { available, needed } => {
                write!(f, "insufficient balance: {available} available, {needed} needed")
            }
            LedgerError::SameAccount => f.write_str("a transfer needs two different accounts"),
            LedgerError::Amount(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for LedgerError {}

/// The maintained totals of one account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Balance {
    pub debits_posted: Msat,
    pub credits_posted: Msat,
    /// Reserved for payments not yet final (held for approval, in flight).
    pub debits_pending: Msat,
}

impl Balance {
    /// What the account could spend now: credits less posted and pending
    /// debits. Zero when it is overdrawn (only `outside` can be).
    pub fn available(&self) -> Msat {
        self.credits_posted.saturating_sub(self.debits_posted).saturating_sub(self.debits_pending)
    }

    /// Credits less posted debits (pending reservations included): the
    /// balance of an account that cannot go negative; zero for `outside`.
    pub fn net_u64(&self) -> u64 {
        self.credits_posted.as_u64().saturating_sub(self.debits_posted.as_u64())
    }

    /// Credits less debits, signed: negative only for `outside`.
    pub fn net(&self) -> i128 {
        i128::from(self.credits_posted.as_u64()) - i128::from(self.debits_posted.as_u64())
    }

    /// Credits cover posted and pending debits together: what holds for
    /// every account that may not go negative (all but `outside`).
    pub fn covers_debits(&self) -> bool {
        let debits = u128::from(self.debits_posted.as_u64()) + u128::from(self.debits_pending.as_u64());
        u128::from(self.credits_posted.as_u64()) >= debits
    }

    fn check_can_debit(&self, kind: AccountKind, amount: Msat) -> Result<(), LedgerError> {
        if kind.may_go_negative() || self.available() >= amount {
            return Ok(());
        }
        Err(LedgerError::InsufficientFunds { available: self.available(), needed: amount })
    }
}

/// One balanced movement of money.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Transfer {
    pub debit: AccountId,
    pub credit: AccountId,
    pub amount: Msat,
}

/// Applies a transfer to the two accounts' totals, or changes nothing.
pub fn post(transfer: Transfer, debit: &mut Balance, credit: &mut Balance) -> Result<(), LedgerError> {
    if transfer.debit == transfer.credit {
        return Err(LedgerError::SameAccount);
    }
    if transfer.amount.is_zero() {
        return Err(LedgerError::Amount(AmountError::Zero));
    }
    debit.check_can_debit(transfer.debit.kind(), transfer.amount)?;
    // Compute both sides before writing either, so that an overflow leaves
    // both accounts untouched.
    let debits_posted = debit.debits_posted.checked_add(transfer.amount)?;
    let credits_posted = credit.credits_posted.checked_add(transfer.amount)?;
    // No account holds more than all the bitcoin there will ever be.
    let credit_net = i128::from(credits_posted.as_u64()) - i128::from(credit.debits_posted.as_u64());
    if !transfer.credit.kind().may_go_negative() && credit_net > i128::from(MONEY_MAX_MSAT) {
        return Err(LedgerError::Amount(AmountError::AboveMaxMoney));
    }
    let (debit_before, credit_before) = (*debit, *credit);
    debit.debits_posted = debits_posted;
    credit.credits_posted = credits_posted;
    assert_posted(transfer, (&debit_before, debit), (&credit_before, credit));
    Ok(())
}

/// The postconditions of [`post`]; a failure is a bug in it, never bad
/// input (input that breaks them was refused above, changing nothing).
fn assert_posted(transfer: Transfer, debit: (&Balance, &Balance), credit: (&Balance, &Balance)) {
    let amount = u128::from(transfer.amount.as_u64());
    let ((debit_before, debit_after), (credit_before, credit_after)) = (debit, credit);
    assert!(amount > 0);
    // The amount leaves one account and enters the other, and nothing else
    // moves: the debit side's debits and the credit side's credits grew by
    // exactly the amount.
    assert_eq!(
        u128::from(debit_after.debits_posted.as_u64()),
        u128::from(debit_before.debits_posted.as_u64()) + amount
    );
    assert_eq!(debit_after.credits_posted, debit_before.credits_posted);
    assert_eq!(debit_after.debits_pending, debit_before.debits_pending);
    assert_eq!(
        u128::from(credit_after.credits_posted.as_u64()),
        u128::from(credit_before.credits_posted.as_u64()) + amount
    );
    assert_eq!(credit_after.debits_posted, credit_before.debits_posted);
    assert_eq!(credit_after.debits_pending, credit_before.debits_pending);
    // Money is conserved: the two balances' sum is what it was.
    assert_eq!(debit_after.net() + credit_after.net(), debit_before.net() + credit_before.net());
    // A debited account that may not go negative still covers its posted
    // and pending debits: it had the amount available before.
    if !transfer.debit.kind().may_go_negative() {
        assert!(debit_after.covers_debits());
    }
    // A credit never breaks the rule for the account it credits.
    if !transfer.credit.kind().may_go_negative() && credit_before.covers_debits() {
        assert!(credit_after.covers_debits());
    }
}

/// Reserves `amount` on an account: it stays in the account but cannot be
/// spent again until the reservation is posted or released.
pub fn reserve(account: AccountId, balance: &mut Balance, amount: Msat) -> Result<(), LedgerError> {
    balance.check_can_debit(account.kind(), amount)?;
    let before = *balance;
    balance.debits_pending = balance.debits_pending.checked_add(amount)?;
    // Postconditions: only the reservation grew, by the amount, and an
    // account that may not go negative covers it (it was available).
    assert_eq!(
        u128::from(balance.debits_pending.as_u64()),
        u128::from(before.debits_pending.as_u64()) + u128::from(amount.as_u64())
    );
    assert_eq!(balance.debits_posted, before.debits_posted);
    assert_eq!(balance.credits_posted, before.credits_posted);
    if !account.kind().may_go_negative() && (!amount.is_zero() || before.covers_debits()) {
        assert!(balance.covers_debits());
    }
    Ok(())
}

/// Gives back a reservation made by [`reserve`].
pub fn release(balance: &mut Balance, amount: Msat) -> Result<(), LedgerError> {
    let before = *balance;
    balance.debits_pending = balance.debits_pending.checked_sub(amount)?;
    // Postconditions: only the reservation shrank, by the amount; what was
    // covered stays covered.
    assert_eq!(
        u128::from(balance.debits_pending.as_u64()) + u128::from(amount.as_u64()),
        u128::from(before.debits_pending.as_u64())
    );
    assert_eq!(balance.debits_posted, before.debits_posted);
    assert_eq!(balance.credits_posted, before.credits_posted);
    if before.covers_debits() {
        assert!(balance.covers_debits());
    }
    Ok(())
}

/// What the audit found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AuditReport {
    pub accounts_checked: u64,
    pub transfers_checked: u64,
    /// Records of the hash-chained audit trail verified (filled in by the
    /// caller, which reads the trail).
    pub audit_records_checked: u64,
    pub total_debits_msat: u128,
    pub total_credits_msat: u128,
    pub violations: Vec<String>,
}

impl AuditReport {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Posted totals per account (debits, credits), recomputed from transfers.
/// Stores that hold many transfers stream them into
/// [`TransferSums::add`] instead of loading them all.
#[derive(Debug, Default)]
pub struct TransferSums {
    sums: HashMap<AccountId, (u128, u128)>,
    pub transfers: u64,
    pub malformed: Vec<String>,
}

impl TransferSums {
    pub fn add(&mut self, t: &Transfer) {
        self.transfers += 1;
        if t.amount.is_zero() || t.debit == t.credit {
            self.malformed.push(format!("malformed transfer {t:?}"));
        }
        let amount = u128::from(t.amount.as_u64());
        self.sums.entry(t.debit).or_default().0 += amount;
        self.sums.entry(t.credit).or_default().1 += amount;
    }
}

/// Checks the maintained totals against totals recomputed from the
/// transfers: they match, debits equal credits across the ledger, no account
/// but `outside` is negative, and no reservation exceeds its funds.
pub fn audit(accounts: impl IntoIterator<Item = (AccountId, Balance)>, sums: TransferSums) -> AuditReport {
    let mut report =
        AuditReport { transfers_checked: sums.transfers, violations: sums.malformed, ..AuditReport::default() };
    let mut recomputed = sums.sums;
    for (id, balance) in accounts {
        report.accounts_checked += 1;
        let (debits, credits) = recomputed.remove(&id).unwrap_or_default();
        report.total_debits_msat += u128::from(balance.debits_posted.as_u64());
        report.total_credits_msat += u128::from(balance.credits_posted.as_u64());
        check_account(&mut report, id, &balance, debits, credits);
    }
    for id in recomputed.keys() {
        report.violations.push(format!("{id}: transfers name an account that does not exist"));
    }
    if report.total_debits_msat != report.total_credits_msat {
        report.violations.push(format!(
            "ledger does not balance: debits {} msat, credits {} msat",
            report.total_debits_msat, report.total_credits_msat
        ));
    }
    report
}

fn check_account(report: &mut AuditReport, id: AccountId, b: &Balance, debits: u128, credits: u128) {
    if u128::from(b.debits_posted.as_u64()) != debits || u128::from(b.credits_posted.as_u64()) != credits {
        report.violations.push(format!(
            "{id}: maintained totals (debits {}, credits {}) differ from the transfers (debits {debits}, credits {credits})",
            b.debits_posted.as_u64(),
            b.credits_posted.as_u64()
        ));
    }
    if id.kind().may_go_negative() {
        return;
    }
    if b.net() < 0 {
        report.violations.push(format!("{id}: negative balance {} msat", b.net()));
    }
    if b.net() < i128::from(b.debits_pending.as_u64()) {
        report.violations.push(format!(
            "{id}: reservations of {} exceed the balance of {} msat",
            b.debits_pending,
            b.net()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: AccountId = AccountId(100);

    fn audit_of<const N: usize>(accounts: [(AccountId, Balance); N], transfers: &[Transfer]) -> AuditReport {
        let mut sums = TransferSums::default();
        transfers.iter().for_each(|t| sums.add(t));
        audit(accounts, sums)
    }

    fn funded(amount: u64) -> Balance {
        Balance { credits_posted: Msat::new(amount), ..Balance::default() }
    }

    #[test]
    fn wallet_cannot_go_negative() {
        let mut alice = funded(10);
        let mut treasury = Balance::default();
        let t = Transfer { debit: ALICE, credit: AccountId::TREASURY, amount: Msat::new(11) };
        let err = post(t, &mut alice, &mut treasury).unwrap_err();
        assert_eq!(err, LedgerError::InsufficientFunds { available: Msat::new(10), needed: Msat::new(11) });
        assert_eq!(alice, funded(10), "a refused transfer changes nothing");
        assert_eq!(treasury, Balance::default());
    }

    #[test]
    fn outside_may_go_negative_and_ledger_balances() {
        let (mut outside, mut treasury, mut alice) = (Balance::default(), Balance::default(), Balance::default());
        let mint = Transfer { debit: AccountId::OUTSIDE, credit: AccountId::TREASURY, amount: Msat::new(50) };
        post(mint, &mut outside, &mut treasury).unwrap();
        let fund = Transfer { debit: AccountId::TREASURY, credit: ALICE, amount: Msat::new(20) };
        post(fund, &mut treasury, &mut alice).unwrap();
        assert_eq!(outside.net(), -50);
        assert_eq!(treasury.available(), Msat::new(30));
        let report =
            audit_of([(AccountId::OUTSIDE, outside), (AccountId::TREASURY, treasury), (ALICE, alice)], &[mint, fund]);
        assert!(report.is_clean(), "{:?}", report.violations);
        assert_eq!(report.transfers_checked, 2);
    }

    #[test]
    fn reservation_blocks_double_spend() {
        let mut alice = funded(10);
        reserve(ALICE, &mut alice, Msat::new(7)).unwrap();
        assert_eq!(alice.available(), Msat::new(3));
        assert!(reserve(ALICE, &mut alice, Msat::new(4)).is_err());
        let mut other = Balance::default();
        let t = Transfer { debit: ALICE, credit: AccountId(101), amount: Msat::new(4) };
        assert!(post(t, &mut alice, &mut other).is_err());
        release(&mut alice, Msat::new(7)).unwrap();
        assert_eq!(alice.available(), Msat::new(10));
        assert!(release(&mut alice, Msat::new(1)).is_err(), "cannot release more than reserved");
    }

    #[test]
    fn no_account_holds_more_than_all_bitcoin() {
        let (mut outside, mut treasury) = (Balance::default(), Balance::default());
        let all = Transfer { debit: AccountId::OUTSIDE, credit: AccountId::TREASURY, amount: Msat::MONEY_MAX };
        post(all, &mut outside, &mut treasury).unwrap();
        let one_more = Transfer { amount: Msat::new(1), ..all };
        assert_eq!(post(one_more, &mut outside, &mut treasury), Err(LedgerError::Amount(AmountError::AboveMaxMoney)));
        assert_eq!(treasury.net_u64(), MONEY_MAX_MSAT, "the refused transfer changed nothing");
    }

    #[test]
    fn overflow_changes_nothing() {
        let mut outside = Balance::default();
        let mut full = Balance { credits_posted: Msat::new(u64::MAX), ..Balance::default() };
        let t = Transfer { debit: AccountId::OUTSIDE, credit: ALICE, amount: Msat::new(1) };
        assert!(post(t, &mut outside, &mut full).is_err());
        assert_eq!(outside, Balance::default());
    }

    #[test]
    fn audit_catches_tampering() {
        let t = Transfer { debit: AccountId::TREASURY, credit: ALICE, amount: Msat::new(5) };
        let report = audit_of([(AccountId::TREASURY, Balance::default()), (ALICE, funded(5))], &[t]);
        assert!(!report.is_clean());
        assert!(report.violations.iter().any(|v| v.contains("treasury")), "{:?}", report.violations);
        let bad = audit_of([(ALICE, funded(3))], &[]);
        assert!(bad.violations.iter().any(|v| v.contains("does not balance")));
    }
}
