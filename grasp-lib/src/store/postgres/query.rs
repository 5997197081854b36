//! A NIP-01 filter as SQL: the `WHERE`, order and limit shared by query, count,
//! negentropy items and delete.
//!
//! Order is nostr's: newest first, ties by ascending id (as `nostr-lmdb` and the memory
//! store return them), so a `limit` keeps the same events on every backend.

use nostr::Filter;
use tokio_postgres::types::ToSql;

/// Parameters of one statement, in `$n` order.
pub type Params = Vec<Box<dyn ToSql + Sync + Send>>;

/// The SQL of one filter: `FROM … WHERE … ORDER BY … LIMIT …` over `events e`, and its
/// parameters.
#[derive(Debug)]
pub struct FilterSql {
    /// `FROM events e WHERE … ORDER BY … [LIMIT …]`.
    pub from: String,
    /// The values of its `$n` placeholders.
    pub params: Params,
}

impl FilterSql {
    /// The parameters as `tokio-postgres` takes them.
    pub fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect()
    }
}

/// Builds the SQL for `filter`, or `None` when nothing can match (`since` after `until`,
/// `limit` 0, an empty `ids`/`authors`/`kinds` set).
pub fn filter_sql(filter: &Filter) -> Option<FilterSql> {
    if let (Some(since), Some(until)) = (filter.since, filter.until) {
        if since > until {
            return None;
        }
    }
    if filter.limit == Some(0) {
        return None;
    }
    let mut conditions: Vec<String> = Vec::new();
    let mut params: Params = Vec::new();
    let next = |params: &mut Params, value: Box<dyn ToSql + Sync + Send>| {
        params.push(value);
        format!("${}", params.len())
    };
    if let Some(ids) = &filter.ids {
        if ids.is_empty() {
            return None;
        }
        let ids: Vec<Vec<u8>> = ids.iter().map(|id| id.as_bytes().to_vec()).collect();
        conditions.push(format!("e.id = ANY({})", next(&mut params, Box::new(ids))));
    }
    if let Some(authors) = &filter.authors {
        if authors.is_empty() {
            return None;
        }
        let authors: Vec<Vec<u8>> = authors.iter().map(|a| a.to_bytes().to_vec()).collect();
        conditions.push(format!("e.pubkey = ANY({})", next(&mut params, Box::new(authors))));
    }
    if let Some(kinds) = &filter.kinds {
        if kinds.is_empty() {
            return None;
        }
        let kinds: Vec<i32> = kinds.iter().map(|k| i32::from(k.as_u16())).collect();
        conditions.push(format!("e.kind = ANY({})", next(&mut params, Box::new(kinds))));
    }
    if let Some(since) = filter.since {
        conditions.push(format!("e.created_at >= {}", next(&mut params, Box::new(since.as_secs() as i64))));
    }
    if let Some(until) = filter.until {
        conditions.push(format!("e.created_at <= {}", next(&mut params, Box::new(until.as_secs() as i64))));
    }
    for (tag, values) in &filter.generic_tags {
        if values.is_empty() {
            return None;
        }
        let name = next(&mut params, Box::new(tag.as_char().to_string()));
        let values: Vec<String> = values.iter().cloned().collect();
        let values = next(&mut params, Box::new(values));
        conditions.push(format!(
            "EXISTS (SELECT 1 FROM event_tags t WHERE t.event_id = e.id AND t.name = {name} AND t.value = ANY({values}))"
        ));
    }
    if let Some(search) = &filter.search {
        let pattern = format!("%{}%", escape_like(search));
        conditions.push(format!("e.content ILIKE {}", next(&mut params, Box::new(pattern))));
    }
    let mut from = String::from("FROM events e");
    if !conditions.is_empty() {
        from.push_str(" WHERE ");
        from.push_str(&conditions.join(" AND "));
    }
    from.push_str(" ORDER BY e.created_at DESC, e.id ASC");
    if let Some(limit) = filter.limit {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        from.push_str(&format!(" LIMIT {}", next(&mut params, Box::new(limit))));
    }
    Some(FilterSql { from, params })
}

/// `text` with `ILIKE`'s wildcards and escape character taken literally.
fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use nostr::{Kind, SingleLetterTag, Timestamp};

    use super::*;

    #[test]
    fn a_filter_that_cannot_match_builds_no_sql() {
        assert!(filter_sql(&Filter::new().since(Timestamp::from(10)).until(Timestamp::from(9))).is_none());
        assert!(filter_sql(&Filter::new().limit(0)).is_none());
        assert!(filter_sql(&Filter::new().kinds(Vec::<Kind>::new())).is_none());
    }

    #[test]
    fn every_field_becomes_one_numbered_condition() {
        let filter = Filter::new()
            .kind(Kind::TextNote)
            .custom_tag(SingleLetterTag::from_char('t').unwrap(), "x")
            .search("50%")
            .since(Timestamp::from(1))
            .limit(3);
        let sql = filter_sql(&filter).unwrap();
        assert_eq!(sql.params.len(), 6, "{}", sql.from);
        assert!(sql.from.contains("e.kind = ANY($1)"), "{}", sql.from);
        assert!(sql.from.ends_with("ORDER BY e.created_at DESC, e.id ASC LIMIT $6"), "{}", sql.from);
        assert_eq!(escape_like("50%_\\"), "50\\%\\_\\\\");
    }
}
