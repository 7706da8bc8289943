//! What a payment was for, beyond its purpose: the task it served and a few
//! tags. Reports add payments up by these (and by agent, tree, payee and
//! day); the policy does not read them.

/// A task name is a label, not a document.
pub const TASK_LEN_MAX_BYTES: usize = 128;
/// Each tag is one more row in the spend aggregates a payment updates, so
/// they are few and short.
pub const TAGS_MAX: usize = 8;
pub const TAG_LEN_MAX_BYTES: usize = 64;
/// Tags are stored joined by this character, which a tag may not contain.
const TAG_SEPARATOR: char = ',';

/// A payment's task and tags, validated (see `gateway::attribution`): the
/// task is printable text, the tags are distinct, sorted, and made of
/// ASCII letters, digits and `-_.:/`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attribution {
    pub task: Option<String>,
    pub tags: Vec<String>,
}

impl Attribution {
    pub fn is_empty(&self) -> bool {
        self.task.is_none() && self.tags.is_empty()
    }

    /// This attribution, its task taken from `inherited` when it names none:
    /// a sub-agent given a task passes it on to the payments it makes.
    pub fn or_task(mut self, inherited: Option<&str>) -> Attribution {
        if self.task.is_none() {
            self.task = inherited.map(str::to_owned);
        }
        self
    }

    /// The tags as one stored column; `None` without tags.
    pub fn tags_column(&self) -> Option<String> {
        if self.tags.is_empty() {
            return None;
        }
        let sep = TAG_SEPARATOR.to_string();
        Some(self.tags.join(&sep))
    }

    /// Reads back what [`Attribution::tags_column`] stored.
    pub fn from_columns(task: Option<String>, tags: Option<String>) -> Attribution {
        let tags = tags.map(|t| t.split(TAG_SEPARATOR).filter(|t| !t.is_empty()).map(str::to_owned).collect());
        Attribution { task, tags: tags.unwrap_or_default() }
    }
}

/// Whether `c` may appear in a tag.
pub fn is_tag_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/')
}

const _: () = assert!(TAGS_MAX * (TAG_LEN_MAX_BYTES + 1) < 1024, "a payment's tags fit in well under 1 KiB");

/// What the spend totals are kept by, besides agent and day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dimension {
    /// Every settled spend has one payee row: the totals per agent, tree
    /// and day are read from these.
    Payee,
    Task,
    Tag,
}

impl Dimension {
    pub const fn as_str(self) -> &'static str {
        match self {
            Dimension::Payee => "payee",
            Dimension::Task => "task",
            Dimension::Tag => "tag",
        }
    }
}

/// Milliseconds in a UTC day: the totals' time grain.
pub const MS_PER_DAY: i64 = 86_400_000;

/// The UTC day (days since 1970-01-01) of an instant.
pub fn day_of(at_ms: i64) -> i64 {
    at_ms.div_euclid(MS_PER_DAY)
}

/// Money that left an agent for good (a payment settled, a session
/// charged), as the spend totals count it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spend<'a> {
    pub agent_id: &'a str,
    /// `agent:ID`, `node:PUBKEY` or `domain:HOST`, as policies name payees.
    pub payee: &'a str,
    pub attribution: &'a Attribution,
    pub amount: coffer_core::Msat,
    pub fee: coffer_core::Msat,
    pub at_ms: i64,
}

/// Which totals to read: one dimension over a range of days (inclusive),
/// added up per agent and value, or per agent and day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpendQuery {
    pub dimension: Dimension,
    pub by_day: bool,
    pub from_day: i64,
    pub to_day: i64,
    /// At most this many rows, the largest amounts first.
    pub limit: u32,
}

/// One row of totals: `value` is the dimension's value, or the day (as
/// days since 1970-01-01, in decimal) when read by day.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpendTotal {
    pub agent_id: String,
    pub value: String,
    pub payments: u64,
    pub amount: coffer_core::Msat,
    pub fee: coffer_core::Msat,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_through_their_column() {
        let a = Attribution { task: Some("crawl".into()), tags: vec!["a".into(), "b:c".into()] };
        let back = Attribution::from_columns(a.task.clone(), a.tags_column());
        assert_eq!(back, a);
        assert_eq!(Attribution::from_columns(None, None), Attribution::default());
        assert!(!is_tag_char(TAG_SEPARATOR));
    }

    #[test]
    fn a_task_is_inherited_only_when_none_is_named() {
        let own = Attribution { task: Some("own".into()), tags: vec![] };
        assert_eq!(own.clone().or_task(Some("parent")).task.as_deref(), Some("own"));
        assert_eq!(Attribution::default().or_task(Some("parent")).task.as_deref(), Some("parent"));
        assert_eq!(Attribution::default().or_task(None).task, None);
    }
}
