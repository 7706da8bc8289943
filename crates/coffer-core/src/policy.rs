//! Spending policy (the constitution). Filled in by the policy work.
