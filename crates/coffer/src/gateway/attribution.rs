//! Checking a payment's task and tags as a caller sends them.

use super::invalid;
use super::text::{self, Lines};
use crate::error::Error;
use crate::model::attribution::{Attribution, TAG_LEN_MAX_BYTES, TAGS_MAX, TASK_LEN_MAX_BYTES, is_tag_char};

/// The task and tags of a request, checked: a task of printable text (no
/// line breaks) of at most [`TASK_LEN_MAX_BYTES`], at most [`TAGS_MAX`]
/// tags of at most [`TAG_LEN_MAX_BYTES`] each, made of ASCII letters,
/// digits and `-_.:/`. Duplicate tags are one; the tags are kept sorted, so
/// that the same set is stored (and its request digested) the same way.
pub fn parse(task: Option<&str>, tags: &[String]) -> Result<Attribution, Error> {
    let task = match task {
        None => None,
        Some(task) => {
            if task.is_empty() || task.len() > TASK_LEN_MAX_BYTES || task.trim() != task {
                return Err(invalid(
                    "task",
                    format!("1 to {TASK_LEN_MAX_BYTES} bytes, without leading or trailing spaces"),
                ));
            }
            text::check("task", task, Lines::Single)?;
            Some(task.to_owned())
        }
    };
    if tags.len() > TAGS_MAX {
        return Err(invalid("tags", format!("at most {TAGS_MAX} tags")));
    }
    for tag in tags {
        if tag.is_empty() || tag.len() > TAG_LEN_MAX_BYTES || !tag.chars().all(is_tag_char) {
            return Err(invalid(
                "tags",
                format!("each tag is 1 to {TAG_LEN_MAX_BYTES} ASCII letters, digits or -_.:/ (got {tag:?})"),
            ));
        }
    }
    let mut tags = tags.to_vec();
    tags.sort_unstable();
    tags.dedup();
    Ok(Attribution { task, tags })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|t| (*t).to_owned()).collect()
    }

    #[test]
    fn good_attribution_is_kept_sorted_and_distinct() {
        let a = parse(Some("crawl news"), &tags(&["b", "a", "b", "team:x/y"])).expect("valid");
        assert_eq!(a.task.as_deref(), Some("crawl news"));
        assert_eq!(a.tags, tags(&["a", "b", "team:x/y"]));
        assert_eq!(parse(None, &[]).expect("empty"), Attribution::default());
    }

    #[test]
    fn bad_attribution_is_refused_with_its_field() {
        let long_task = "t".repeat(TASK_LEN_MAX_BYTES + 1);
        let long_tag = "g".repeat(TAG_LEN_MAX_BYTES + 1);
        let many = tags(&["a", "b", "c", "d", "e", "f", "g", "h", "i"]);
        let cases: [(Option<&str>, Vec<String>, &str); 8] = [
            (Some(""), vec![], "task"),
            (Some(&long_task), vec![], "task"),
            (Some(" padded"), vec![], "task"),
            (Some("two\nlines"), vec![], "task"),
            (None, many, "tags"),
            (None, tags(&[""]), "tags"),
            (None, vec![long_tag], "tags"),
            (None, tags(&["a,b"]), "tags"),
        ];
        for (task, tags, field) in cases {
            match parse(task, &tags) {
                Err(Error::InvalidField { field: got, .. }) => assert_eq!(got, field, "{task:?} {tags:?}"),
                other => panic!("{task:?} {tags:?} gave {other:?}"),
            }
        }
    }
}
