//! Keyset paging over one index partition: a page ends with the sort key of its last item, and
//! the next page starts strictly after it. Sort keys are unique within a partition (each ends
//! with an id), so a page never repeats or skips an item that was listed when the first page
//! was read, however many items arrive meanwhile. An item that arrives after the cursor in the
//! list's order shows up on a later page; one before it does not.

use crate::store::{Query, ReadModelError, ReadModelStore};
use serde_json::Value;

/// One page of a list: its items and, when more follow, the sort key to continue after.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// Reads the page of `query` (its limit is the page size) that follows the sort key `after`
/// in the query's direction. `decode` turns a document into an item (`None` skips it) and
/// `key_of` gives an item's sort key in this index.
pub async fn page<T>(
    models: &dyn ReadModelStore,
    query: Query<'_>,
    after: Option<&str>,
    decode: impl Fn(Value) -> Result<Option<T>, ReadModelError>,
    key_of: impl Fn(&T) -> String,
) -> Result<Page<T>, ReadModelError> {
    let size = query.limit;
    if size == 0 {
        return Ok(Page {
            items: Vec::new(),
            next: None,
        });
    }
    // The bound is inclusive: one more for the cursor's own item, one more to see whether
    // another page follows.
    let bounded = match (after, query.descending) {
        (None, _) => query,
        (Some(key), false) => query.between(Some(key), query.to),
        (Some(key), true) => query.between(query.from, Some(key)),
    };
    let docs = models
        .query(Query {
            limit: size + 2,
            ..bounded
        })
        .await?;
    let mut items = Vec::with_capacity(docs.len());
    for body in docs {
        if let Some(item) = decode(body)? {
            if after.is_some_and(|a| key_of(&item) == a) {
                continue;
            }
            items.push(item);
        }
    }
    let next = if items.len() > size {
        items.truncate(size);
        items.last().map(&key_of)
    } else {
        None
    };
    Ok(Page { items, next })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DocKey, EncodedDoc, IndexEntry};
    use crate::MemoryReadModelStore;
    use serde_json::json;

    async fn store_with(keys: &[&str]) -> MemoryReadModelStore {
        let store = MemoryReadModelStore::new();
        for k in keys {
            store
                .put_doc(
                    DocKey::new("docs", k),
                    EncodedDoc::from_json(&json!({ "k": k }), vec![IndexEntry::new("i", "p", *k)]),
                )
                .await
                .expect("put");
        }
        store
    }

    async fn walk(store: &MemoryReadModelStore, size: usize, descending: bool) -> Vec<Vec<String>> {
        let mut pages = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut query = Query::new("i", "p", size);
            if descending {
                query = query.descending();
            }
            let page = page(
                store,
                query,
                after.as_deref(),
                |v| Ok(v["k"].as_str().map(str::to_owned)),
                String::clone,
            )
            .await
            .expect("page");
            pages.push(page.items.clone());
            match page.next {
                Some(next) => {
                    assert_eq!(Some(&next), page.items.last(), "the cursor is the last key");
                    after = Some(next);
                }
                None => return pages,
            }
        }
    }

    #[tokio::test]
    async fn pages_follow_each_other_in_both_directions_and_end_without_an_empty_page() {
        let store = store_with(&["a", "b", "c", "d", "e"]).await;
        assert_eq!(
            walk(&store, 2, false).await,
            [vec!["a", "b"], vec!["c", "d"], vec!["e"]]
        );
        assert_eq!(
            walk(&store, 2, true).await,
            [vec!["e", "d"], vec!["c", "b"], vec!["a"]]
        );
        let even = store_with(&["a", "b", "c", "d"]).await;
        assert_eq!(
            walk(&even, 2, false).await,
            [vec!["a", "b"], vec!["c", "d"]]
        );
        let empty = store_with(&[]).await;
        assert_eq!(walk(&empty, 2, false).await, [Vec::<String>::new()]);
    }
}
