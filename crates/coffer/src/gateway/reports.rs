//! Where the money went: spend reports read from the totals every settled
//! payment and session charge keeps (see `payment::spend`), so a report
//! costs the rows of its days, not the payments behind them.

use super::{Gateway, Principal, invalid};
use crate::error::Error;
use crate::model::attribution::{MS_PER_DAY, day_of};
use crate::model::{AgentRecord, Dimension, SpendQuery, SpendTotal};
use coffer_core::Msat;
use std::collections::{HashMap, HashSet};

/// The longest range a report covers: ten years of days.
pub const REPORT_DAYS_MAX: i64 = 3_660;
/// The range a report covers when it names none: the last 30 days.
const REPORT_DAYS_DEFAULT: i64 = 30;
/// At most this many total rows are read for one report. Rows are per
/// agent, day and value, so this bounds a report's cost whatever the
/// history; a report that reaches it says it is truncated.
pub const REPORT_TOTALS_READ_MAX: u32 = 50_000;
/// At most this many rows are answered, the largest first.
pub const REPORT_ROWS_MAX: usize = 1_000;
const _: () = assert!(REPORT_ROWS_MAX <= REPORT_TOTALS_READ_MAX as usize);
const _: () = assert!(REPORT_DAYS_DEFAULT <= REPORT_DAYS_MAX);

/// What a report adds its rows up by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupBy {
    /// Each agent's own spending.
    Agent,
    /// Each agent's spending with its sub-agents' (their tree below it).
    Tree,
    Task,
    Tag,
    /// `agent:ID`, `node:PUBKEY`.
    Payee,
    /// UTC days, oldest first.
    Day,
}

impl GroupBy {
    pub fn parse(text: &str) -> Result<GroupBy, Error> {
        Ok(match text {
            "agent" => GroupBy::Agent,
            "tree" => GroupBy::Tree,
            "task" => GroupBy::Task,
            "tag" => GroupBy::Tag,
            "payee" => GroupBy::Payee,
            "day" => GroupBy::Day,
            _ => return Err(invalid("group_by", "one of agent, tree, task, tag, payee, day".into())),
        })
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            GroupBy::Agent => "agent",
            GroupBy::Tree => "tree",
            GroupBy::Task => "task",
            GroupBy::Tag => "tag",
            GroupBy::Payee => "payee",
            GroupBy::Day => "day",
        }
    }

    fn dimension(self) -> Dimension {
        match self {
            GroupBy::Task => Dimension::Task,
            GroupBy::Tag => Dimension::Tag,
            GroupBy::Agent | GroupBy::Tree | GroupBy::Payee | GroupBy::Day => Dimension::Payee,
        }
    }
}

/// Payments, amount and fees added up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sum {
    pub payments: u64,
    pub amount: Msat,
    pub fee: Msat,
}

impl Sum {
    fn add(&mut self, row: &SpendTotal) {
        self.payments = self.payments.saturating_add(row.payments);
        self.amount = self.amount.saturating_add(row.amount);
        self.fee = self.fee.saturating_add(row.fee);
    }

    fn add_sum(&mut self, other: &Sum) {
        self.payments = self.payments.saturating_add(other.payments);
        self.amount = self.amount.saturating_add(other.amount);
        self.fee = self.fee.saturating_add(other.fee);
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportRow {
    /// An agent id, a task, a tag, a payee or a day (`YYYY-MM-DD`).
    pub key: String,
    /// For people: the agent's name where the key is (or names) an agent.
    pub label: Option<String>,
    pub sum: Sum,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpendReport {
    pub group_by: GroupBy,
    /// The first and last UTC day covered (days since 1970-01-01).
    pub from_day: i64,
    pub to_day: i64,
    pub rows: Vec<ReportRow>,
    /// All that the caller's agents spent in the range, whatever the
    /// grouping (a payment without a task or tags is in no task or tag row).
    pub total: Sum,
    /// Some rows were left out (more than [`REPORT_ROWS_MAX`], or more
    /// totals than a report reads).
    pub truncated: bool,
}

impl Gateway {
    /// The spending of the caller's agents between two instants (whole UTC
    /// days), grouped: every agent for the operator, an agent's own tree
    /// (itself and its sub-agents) for an agent.
    pub async fn spend_report(
        &self,
        caller: &Principal,
        group_by: GroupBy,
        from_ms: Option<i64>,
        to_ms: Option<i64>,
    ) -> Result<SpendReport, Error> {
        let (from_day, to_day) = day_range(from_ms, to_ms, self.now_ms())?;
        let viewer = match caller {
            Principal::Operator => None,
            Principal::Agent(key) => Some(key.agent_id.clone()),
        };
        let query = SpendQuery {
            dimension: group_by.dimension(),
            by_day: group_by == GroupBy::Day,
            from_day,
            to_day,
            limit: REPORT_TOTALS_READ_MAX,
        };
        let (agents, rows, totals) = self
            .store
            .read(move |tx| {
                let rows = tx.spend_totals(&query)?;
                // The total comes from the payee rows, which every spend has.
                let totals = match query.dimension {
                    Dimension::Payee if !query.by_day => None,
                    _ => Some(tx.spend_totals(&SpendQuery { dimension: Dimension::Payee, by_day: false, ..query })?),
                };
                Ok((tx.agents()?, rows, totals))
            })
            .await?;
        let scope = Scope::new(&agents, viewer.as_deref())?;
        let truncated_read =
            [Some(&rows), totals.as_ref()].into_iter().flatten().any(|r| r.len() >= REPORT_TOTALS_READ_MAX as usize);
        let total = scope.sum(totals.as_ref().unwrap_or(&rows));
        let mut report_rows = group(group_by, &scope, &rows);
        let truncated = truncated_read || report_rows.len() > REPORT_ROWS_MAX;
        report_rows.truncate(REPORT_ROWS_MAX);
        Ok(SpendReport { group_by, from_day, to_day, rows: report_rows, total, truncated })
    }
}

/// The days a report covers: `to` defaults to now, `from` to 30 days
/// before `to`; both inclusive, at most [`REPORT_DAYS_MAX`] days.
pub fn day_range(from_ms: Option<i64>, to_ms: Option<i64>, now_ms: i64) -> Result<(i64, i64), Error> {
    let to_day = day_of(to_ms.unwrap_or(now_ms));
    let from_day = match from_ms {
        Some(from_ms) => day_of(from_ms),
        None => to_day - (REPORT_DAYS_DEFAULT - 1),
    };
    if from_day > to_day {
        return Err(invalid("from", "must not be after `to`".into()));
    }
    if to_day - from_day >= REPORT_DAYS_MAX {
        return Err(invalid("from", format!("a report covers at most {REPORT_DAYS_MAX} days")));
    }
    Ok((from_day, to_day))
}

/// A UTC day as `YYYY-MM-DD`.
pub fn day_text(day: i64) -> String {
    let at_ms = day.saturating_mul(MS_PER_DAY);
    chrono::DateTime::from_timestamp_millis(at_ms).map(|t| t.format("%Y-%m-%d").to_string()).unwrap_or_default()
}

/// The agents a caller may see, with their names and parents.
struct Scope<'a> {
    names: HashMap<&'a str, &'a str>,
    parents: HashMap<&'a str, &'a str>,
    visible: HashSet<&'a str>,
}

impl<'a> Scope<'a> {
    /// Every agent for the operator (`viewer` none), else the viewer and
    /// its descendants.
    fn new(agents: &'a [AgentRecord], viewer: Option<&str>) -> Result<Scope<'a>, Error> {
        let names = agents.iter().map(|a| (a.id.as_str(), a.name.as_str())).collect();
        let parents: HashMap<&str, &str> =
            agents.iter().filter_map(|a| Some((a.id.as_str(), a.parent_id.as_deref()?))).collect();
        let visible = match viewer {
            None => agents.iter().map(|a| a.id.as_str()).collect(),
            Some(viewer) => {
                let root = agents.iter().find(|a| a.id == viewer).ok_or(Error::NotFound("agent"))?;
                let mut visible = HashSet::from([root.id.as_str()]);
                // A pass adds the next generation at least (oldest first,
                // usually all of it); a tree is at most TREE_DEPTH_MAX deep.
                for _ in 0..=crate::limits::TREE_DEPTH_MAX {
                    let before = visible.len();
                    for agent in agents {
                        if agent.parent_id.as_deref().is_some_and(|p| visible.contains(p)) {
                            visible.insert(agent.id.as_str());
                        }
                    }
                    if visible.len() == before {
                        break;
                    }
                }
                visible
            }
        };
        Ok(Scope { names, parents, visible })
    }

    fn sees(&self, agent_id: &str) -> bool {
        self.visible.contains(agent_id)
    }

    fn sum(&self, rows: &[SpendTotal]) -> Sum {
        let mut sum = Sum::default();
        rows.iter().filter(|r| self.sees(&r.agent_id)).for_each(|r| sum.add(r));
        sum
    }

    fn label(&self, agent_id: &str) -> Option<String> {
        self.names.get(agent_id).map(|name| (*name).to_owned())
    }

    /// The agent and its ancestors the caller sees, nearest first; bounded
    /// by the tree's depth.
    fn lineage(&self, agent_id: &'a str) -> Vec<&'a str> {
        let mut line = Vec::new();
        let mut next = Some(agent_id);
        while let Some(id) = next.filter(|id| self.sees(id)) {
            if line.len() > crate::limits::TREE_DEPTH_MAX as usize {
                break;
            }
            line.push(id);
            next = self.parents.get(id).copied();
        }
        line
    }
}

/// The caller's rows added up by `group_by`, largest amount first (days
/// oldest first).
fn group(group_by: GroupBy, scope: &Scope<'_>, rows: &[SpendTotal]) -> Vec<ReportRow> {
    let mut sums: HashMap<String, Sum> = HashMap::new();
    for row in rows.iter().filter(|r| scope.sees(&r.agent_id)) {
        match group_by {
            GroupBy::Agent => sums.entry(row.agent_id.clone()).or_default().add(row),
            GroupBy::Tree => {
                let mut own = Sum::default();
                own.add(row);
                for id in scope.lineage(&row.agent_id) {
                    sums.entry(id.to_owned()).or_default().add_sum(&own);
                }
            }
            GroupBy::Day => {
                let day = row.value.parse::<i64>().map(day_text).unwrap_or_else(|_| row.value.clone());
                sums.entry(day).or_default().add(row);
            }
            GroupBy::Task | GroupBy::Tag | GroupBy::Payee => sums.entry(row.value.clone()).or_default().add(row),
        }
    }
    let label = |key: &str| match group_by {
        GroupBy::Agent | GroupBy::Tree => scope.label(key),
        GroupBy::Payee => key.strip_prefix("agent:").and_then(|id| scope.label(id)),
        GroupBy::Task | GroupBy::Tag | GroupBy::Day => None,
    };
    let mut out: Vec<ReportRow> =
        sums.into_iter().map(|(key, sum)| ReportRow { label: label(&key), key, sum }).collect();
    match group_by {
        GroupBy::Day => out.sort_by(|a, b| a.key.cmp(&b.key)),
        _ => out.sort_by(|a, b| b.sum.amount.cmp(&a.sum.amount).then_with(|| a.key.cmp(&b.key))),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, parent: Option<&str>) -> AgentRecord {
        AgentRecord {
            id: id.into(),
            name: format!("name of {id}"),
            account: coffer_core::AccountId(1),
            balance: Default::default(),
            created_at_ms: 0,
            parent_id: parent.map(str::to_owned),
            can_create_subagents: true,
            frozen_reason: None,
            task: None,
        }
    }

    fn total(agent_id: &str, value: &str, amount: u64) -> SpendTotal {
        SpendTotal {
            agent_id: agent_id.into(),
            value: value.into(),
            payments: 1,
            amount: Msat::new(amount),
            fee: Msat::new(1),
        }
    }

    fn keyed(rows: &[ReportRow]) -> Vec<(&str, u64)> {
        rows.iter().map(|r| (r.key.as_str(), r.sum.amount.as_u64())).collect()
    }

    #[test]
    fn a_tree_adds_its_sub_agents_and_an_agent_sees_only_its_own_tree() {
        // The grandchild listed before its parent (made in the same
        // millisecond, its id sorting first): still in the child's tree.
        let agents =
            [agent("root", None), agent("grand", Some("child")), agent("child", Some("root")), agent("other", None)];
        let rows =
            [total("root", "p", 1), total("child", "p", 10), total("grand", "p", 100), total("other", "p", 1_000)];
        let all = Scope::new(&agents, None).expect("a scope");
        assert_eq!(
            keyed(&group(GroupBy::Tree, &all, &rows)),
            [("other", 1_000), ("root", 111), ("child", 110), ("grand", 100)]
        );
        assert_eq!(
            keyed(&group(GroupBy::Agent, &all, &rows)),
            [("other", 1_000), ("grand", 100), ("child", 10), ("root", 1)]
        );
        let child = Scope::new(&agents, Some("child")).expect("a scope");
        assert_eq!(keyed(&group(GroupBy::Tree, &child, &rows)), [("child", 110), ("grand", 100)]);
        assert_eq!(child.sum(&rows).amount, Msat::new(110));
        let root = Scope::new(&agents, Some("root")).expect("a scope");
        assert_eq!(root.sum(&rows).amount, Msat::new(111), "the grandchild listed before its parent counts");
        assert!(Scope::new(&agents, Some("nobody")).is_err());
    }

    #[test]
    fn days_are_dates_oldest_first_and_payees_name_their_agents() {
        let agents = [agent("a", None)];
        let scope = Scope::new(&agents, None).expect("a scope");
        let days = group(GroupBy::Day, &scope, &[total("a", "20000", 5), total("a", "1", 7)]);
        assert_eq!(keyed(&days), [("1970-01-02", 7), ("2024-10-04", 5)]);
        let payees = group(GroupBy::Payee, &scope, &[total("a", "agent:a", 5), total("a", "node:02", 7)]);
        assert_eq!(payees[1].label.as_deref(), Some("name of a"));
        assert_eq!(payees[0].label, None);
    }

    #[test]
    fn ranges_are_whole_days_bounded_and_ordered() {
        let now_ms = 100 * MS_PER_DAY + 5;
        assert_eq!(day_range(None, None, now_ms).expect("default"), (71, 100));
        assert_eq!(day_range(Some(MS_PER_DAY - 1), Some(MS_PER_DAY), now_ms).expect("two days"), (0, 1));
        assert!(day_range(Some(2 * MS_PER_DAY), Some(MS_PER_DAY), now_ms).is_err());
        assert!(day_range(Some(0), Some(REPORT_DAYS_MAX * MS_PER_DAY), now_ms).is_err());
        assert!(day_range(Some(0), Some((REPORT_DAYS_MAX - 1) * MS_PER_DAY), now_ms).is_ok());
        assert!(matches!(GroupBy::parse("tags"), Err(Error::InvalidField { field: "group_by", .. })));
        for g in [GroupBy::Agent, GroupBy::Tree, GroupBy::Task, GroupBy::Tag, GroupBy::Payee, GroupBy::Day] {
            assert_eq!(GroupBy::parse(g.as_str()).expect("round trip"), g);
        }
    }
}
