//! The in-process core on the payment hot path: one policy-checked transfer
//! is `evaluate_chain` over a policy of several windows, payee lists and an
//! approval threshold, then `ledger::post` and `Usage::record`.
//!
//! cargo bench -p coffer-core --bench core

use coffer_core::Msat;
use coffer_core::ledger::{self, AccountId, Balance, Transfer};
use coffer_core::policy::{Attempt, Decision, Payee, Policy, Usage, evaluate_chain};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

const POLICY: &str = r#"{
  "max_payment_msat": 5000000,
  "budgets": [{"limit_msat": 100000000000, "window": "1h", "kind": "rolling"},
              {"limit_msat": 1000000000000, "window": "day", "kind": "calendar"},
              {"limit_msat": 5000000000000, "window": "month", "kind": "calendar"}],
  "lifetime_msat": 100000000000000,
  "max_payments_per_minute": 60000,
  "payees": {"default": "allow", "deny": ["agent:agt_spam1", "agent:agt_spam2", "node:02eec7245d6b7d2ccb30380bfac92c2c9f5fb7e3e89cbeb50f1b6fa30b0e1b6e46"]},
  "approval_above_msat": 2000000
}"#;

fn policy_checked_transfers(c: &mut Criterion) {
    let policy = Policy::from_json(POLICY).expect("the benchmark's policy is valid");
    let mut group = c.benchmark_group("core");
    group.throughput(Throughput::Elements(1));
    group.bench_function("policy_checked_transfer", |b| {
        let mut usage = Usage::new();
        let (mut payer, mut payee) =
            (Balance { credits_posted: Msat::new(u64::MAX / 4), ..Balance::default() }, Balance::default());
        let attempt = Attempt {
            amount: Msat::new(1_000),
            fee_limit: Msat::ZERO,
            payee: Payee { agent_id: Some("agt_seller".into()), ..Payee::default() },
        };
        let transfer = Transfer { debit: AccountId(100), credit: AccountId(101), amount: attempt.amount };
        // Time moves 2 ms per payment (500 a second, 30,000 a minute): every
        // payment passes every check, so the allow path is what is measured.
        let mut now_ms = 1_800_000_000_000i64;
        let mut not_allowed = 0u64;
        b.iter(|| {
            now_ms += 2;
            let decision = evaluate_chain(&[(&policy, &usage)], black_box(&attempt), now_ms);
            if decision == Decision::Allow {
                ledger::post(transfer, &mut payer, &mut payee).expect("funded");
                usage.record(&policy, attempt.amount, now_ms);
            } else {
                not_allowed += 1;
            }
            black_box(&decision);
        });
        assert_eq!(not_allowed, 0, "the benchmark must measure allowed payments");
    });
    group.finish();
}

criterion_group!(benches, policy_checked_transfers);
criterion_main!(benches);
