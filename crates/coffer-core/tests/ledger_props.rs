//! Property tests of the ledger: random sequences of postings, reservations
//! and releases, checked against a model kept beside the ledger (the exact
//! list of transfers and of open reservations), never against the ledger's
//! own totals. `post`, `reserve` and `release` assert their postconditions
//! themselves; these tests drive them over sequences no example would, and
//! check what holds across a whole sequence.

use coffer_core::ledger::{self, AuditReport, TransferSums};
use coffer_core::{AccountId, Balance, LedgerError, MONEY_MAX_MSAT, Msat, Transfer};
use proptest::prelude::*;

/// The accounts of a small ledger: the three system accounts and three
/// wallets.
const ACCOUNTS: [AccountId; 6] =
    [AccountId::OUTSIDE, AccountId::TREASURY, AccountId::FEES, AccountId(100), AccountId(101), AccountId(102)];

#[derive(Clone, Debug)]
enum Op {
    /// A transfer between two accounts (maybe the same one: refused).
    Post { debit: usize, credit: usize, amount: u64 },
    /// A reservation on one account.
    Reserve { account: usize, amount: u64 },
    /// Gives back the reservation with this index among the open ones, if
    /// any.
    Release { which: usize },
    /// Settles an open reservation: releases it and posts it to `credit`,
    /// the way a held payment is paid.
    Settle { which: usize, credit: usize },
    /// Releases more than is reserved: always refused.
    ReleaseTooMuch { account: usize },
}

/// Amounts that are mostly ordinary, sometimes zero, sometimes at or beyond
/// the supply cap and near `u64::MAX`, so that refusals happen too.
fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => 1..=1_000_000u64,
        1 => Just(0u64),
        1 => (MONEY_MAX_MSAT - 2)..=(MONEY_MAX_MSAT + 2),
        1 => (u64::MAX - 2)..=u64::MAX,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let account = 0..ACCOUNTS.len();
    prop_oneof![
        4 => (account.clone(), account.clone(), amount())
            .prop_map(|(debit, credit, amount)| Op::Post { debit, credit, amount }),
        2 => (account.clone(), amount()).prop_map(|(account, amount)| Op::Reserve { account, amount }),
        1 => any::<usize>().prop_map(|which| Op::Release { which }),
        1 => (any::<usize>(), account.clone()).prop_map(|(which, credit)| Op::Settle { which, credit }),
        1 => account.prop_map(|account| Op::ReleaseTooMuch { account }),
    ]
}

/// The ledger and the model beside it.
#[derive(Default)]
struct World {
    balances: [Balance; 6],
    /// Every transfer that was posted.
    posted: Vec<Transfer>,
    /// Open reservations: (account index, amount).
    reserved: Vec<(usize, Msat)>,
}

impl World {
    fn two(&mut self, a: usize, b: usize) -> (&mut Balance, &mut Balance) {
        assert_ne!(a, b);
        if a < b {
            let (left, right) = self.balances.split_at_mut(b);
            (&mut left[a], &mut right[0])
        } else {
            let (left, right) = self.balances.split_at_mut(a);
            (&mut right[0], &mut left[b])
        }
    }

    fn post(&mut self, debit: usize, credit: usize, amount: Msat) -> Result<(), LedgerError> {
        let transfer = Transfer { debit: ACCOUNTS[debit], credit: ACCOUNTS[credit], amount };
        let result = if debit == credit {
            let mut copy = self.balances[credit];
            ledger::post(transfer, &mut self.balances[debit], &mut copy)
        } else {
            let (d, c) = self.two(debit, credit);
            ledger::post(transfer, d, c)
        };
        if result.is_ok() {
            self.posted.push(transfer);
        }
        result
    }

    fn apply(&mut self, op: &Op) {
        let before = self.balances;
        let refused = match *op {
            Op::Post { debit, credit, amount } => self.post(debit, credit, Msat::new(amount)).is_err(),
            Op::Reserve { account, amount } => {
                let amount = Msat::new(amount);
                let result = ledger::reserve(ACCOUNTS[account], &mut self.balances[account], amount);
                if result.is_ok() {
                    self.reserved.push((account, amount));
                }
                result.is_err()
            }
            Op::Release { which } => {
                if self.reserved.is_empty() {
                    return;
                }
                let (account, amount) = self.reserved.remove(which % self.reserved.len());
                ledger::release(&mut self.balances[account], amount).expect("an open reservation can be released");
                // Reserving and releasing the same amount balance out.
                false
            }
            Op::Settle { which, credit } => {
                if self.reserved.is_empty() {
                    return;
                }
                let (account, amount) = self.reserved.remove(which % self.reserved.len());
                ledger::release(&mut self.balances[account], amount).expect("an open reservation can be released");
                // A reserved amount was available when reserved and nothing
                // since could spend it, so the posting goes through unless
                // it is refused for what it is (zero, one account, a credit
                // past the supply cap).
                match self.post(account, credit, amount) {
                    Ok(()) => {}
                    Err(LedgerError::InsufficientFunds { .. }) => {
                        panic!("a reservation of {amount} on {} could not be paid", ACCOUNTS[account])
                    }
                    Err(_) => {}
                }
                false
            }
            Op::ReleaseTooMuch { account } => {
                let pending = self.balances[account].debits_pending.as_u64();
                let Some(too_much) = pending.checked_add(1) else { return };
                assert!(ledger::release(&mut self.balances[account], Msat::new(too_much)).is_err());
                true
            }
        };
        if refused {
            assert_eq!(self.balances, before, "a refused {op:?} changed nothing");
        }
    }

    fn audit(&self) -> AuditReport {
        let mut sums = TransferSums::default();
        self.posted.iter().for_each(|t| sums.add(t));
        ledger::audit(ACCOUNTS.iter().copied().zip(self.balances), sums)
    }

    /// What holds after every step.
    fn check(&self) {
        // Money is conserved: the balances sum to zero (`outside` is minus
        // the money inside), and all debits equal all credits.
        let net: i128 = self.balances.iter().map(Balance::net).sum();
        assert_eq!(net, 0);
        // No account but `outside` goes below zero, with its reservations.
        for (id, balance) in ACCOUNTS.iter().zip(&self.balances) {
            if !id.kind().may_go_negative() {
                assert!(balance.covers_debits(), "{id}: {balance:?}");
                assert!(balance.net() >= 0);
            }
        }
        // The reservations are exactly the open ones.
        for (index, balance) in self.balances.iter().enumerate() {
            let open: u128 =
                self.reserved.iter().filter(|(a, _)| *a == index).map(|(_, m)| u128::from(m.as_u64())).sum();
            assert_eq!(u128::from(balance.debits_pending.as_u64()), open, "{}", ACCOUNTS[index]);
        }
        // The maintained totals are the sums of the transfers.
        for (id, balance) in ACCOUNTS.iter().zip(&self.balances) {
            let debits: u128 =
                self.posted.iter().filter(|t| t.debit == *id).map(|t| u128::from(t.amount.as_u64())).sum();
            let credits: u128 =
                self.posted.iter().filter(|t| t.credit == *id).map(|t| u128::from(t.amount.as_u64())).sum();
            assert_eq!(u128::from(balance.debits_posted.as_u64()), debits, "{id}");
            assert_eq!(u128::from(balance.credits_posted.as_u64()), credits, "{id}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Over any sequence: every step keeps the ledger balanced and every
    /// account but `outside` covered, a refused step changes nothing, and
    /// the audit finds nothing wrong at the end.
    #[test]
    fn any_sequence_keeps_the_ledger_balanced(ops in prop::collection::vec(op(), 1..64)) {
        let mut world = World::default();
        for op in &ops {
            world.apply(op);
            world.check();
        }
        let report = world.audit();
        prop_assert!(report.is_clean(), "{:?}", report.violations);
        prop_assert_eq!(report.total_debits_msat, report.total_credits_msat);
        prop_assert_eq!(report.transfers_checked, world.posted.len() as u64);
    }

    /// Reserving an amount and releasing it leaves the balance as it was:
    /// pending changes balance out.
    #[test]
    fn a_reservation_released_changes_nothing(funds in 0..=MONEY_MAX_MSAT, amount in amount(), outside in any::<bool>()) {
        let account = if outside { AccountId::OUTSIDE } else { AccountId(100) };
        let start = Balance { credits_posted: Msat::new(funds), ..Balance::default() };
        let mut balance = start;
        if ledger::reserve(account, &mut balance, Msat::new(amount)).is_ok() {
            ledger::release(&mut balance, Msat::new(amount)).unwrap();
        }
        prop_assert_eq!(balance, start);
    }

    /// A held payment paid (reserved, then released and posted) ends where
    /// paying it at once would have.
    #[test]
    fn settling_a_reservation_is_posting_it(funds in 1..=MONEY_MAX_MSAT, amount in 1..=MONEY_MAX_MSAT) {
        let funded = Balance { credits_posted: Msat::new(funds), ..Balance::default() };
        let transfer = Transfer { debit: AccountId(100), credit: AccountId(101), amount: Msat::new(amount) };
        let (mut direct, mut direct_credit) = (funded, Balance::default());
        let direct_result = ledger::post(transfer, &mut direct, &mut direct_credit);
        let (mut held, mut held_credit) = (funded, Balance::default());
        match ledger::reserve(transfer.debit, &mut held, transfer.amount) {
            Ok(()) => {
                ledger::release(&mut held, transfer.amount).unwrap();
                prop_assert_eq!(ledger::post(transfer, &mut held, &mut held_credit), direct_result);
            }
            Err(e) => prop_assert_eq!(Err(e), direct_result),
        }
        prop_assert_eq!((held, held_credit), (direct, direct_credit));
    }

    /// An amount written as SQL reads back as itself; what cannot be
    /// written, or is negative when read, is an error, never a panic.
    #[test]
    fn sql_amounts_round_trip(value in any::<u64>(), stored in any::<i64>()) {
        match Msat::new(value).to_sql() {
            Ok(v) => prop_assert_eq!(Msat::from_sql(v), Ok(Msat::new(value))),
            Err(_) => prop_assert!(value > i64::MAX as u64),
        }
        match Msat::from_sql(stored) {
            Ok(m) => prop_assert_eq!(m.to_sql(), Ok(stored)),
            Err(_) => prop_assert!(stored < 0),
        }
    }
}
