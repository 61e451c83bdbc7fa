//! One read-model batch: a document cache in front of SQLite.
//!
//! Reads go to the cache first, then to the `reader` connection (a snapshot); writes only mark
//! cached documents dirty and applied sequences are only remembered. `flush` then writes, on the
//! writer connection inside its transaction, each dirty document once, only the index entries
//! that changed, and the applied sequences, with cached prepared statements. A rebuild batch
//! touching one order document twenty times writes it once.

use super::sql_err;
use projections::store::{BatchTx, DocTx, IndexEntry, ReadModelError};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;
use std::collections::HashMap;

/// `(index, partition, sort)`, sorted and deduplicated within a document.
pub(super) type Entry = (String, String, String);

/// A document body: parsed, or JSON text written by a typed document (parsed only if read
/// again within the batch, which typed documents written at the batch end never are).
enum Body {
    Value(Value),
    Json(String),
}

struct CachedDoc {
    /// The document as the batch sees it (`None`: absent or deleted).
    body: Option<Body>,
    index: Vec<Entry>,
    /// The index entries stored in the database: `None` until known, `Some(None)` when the
    /// database has no such document.
    stored: Option<Option<Vec<Entry>>>,
    dirty: bool,
}

pub(super) struct SqliteBatch<'c> {
    /// Where documents and applied sequences are read from.
    reader: &'c Connection,
    /// collection -> key -> document; nested so that lookups need no allocation.
    docs: HashMap<String, HashMap<String, CachedDoc>>,
    /// (projection, stream key, last sequence) to record.
    applied: Vec<(String, String, i64)>,
}

pub(super) fn corrupt(collection: &str, key: &str, reason: impl ToString) -> ReadModelError {
    ReadModelError::Corrupt {
        collection: collection.to_owned(),
        key: key.to_owned(),
        reason: reason.to_string(),
    }
}

pub(super) fn parse_entries(
    collection: &str,
    key: &str,
    text: &str,
) -> Result<Vec<Entry>, ReadModelError> {
    serde_json::from_str(text).map_err(|e| corrupt(collection, key, e))
}

fn owned_entries(index: Vec<IndexEntry>) -> Vec<Entry> {
    let mut entries: Vec<Entry> = index
        .into_iter()
        .map(|e| (e.index.to_owned(), e.partition, e.sort))
        .collect();
    entries.sort_unstable();
    entries.dedup();
    entries
}

impl<'c> SqliteBatch<'c> {
    pub(super) fn new(reader: &'c Connection) -> Self {
        Self {
            reader,
            docs: HashMap::new(),
            applied: Vec::new(),
        }
    }

    fn load(&self, collection: &str, key: &str) -> Result<CachedDoc, ReadModelError> {
        let row: Option<(String, String)> = self
            .reader
            .prepare_cached("SELECT body, idx FROM rm_docs WHERE collection = ?1 AND key = ?2")
            .map_err(sql_err)?
            .query_row(params![collection, key], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(sql_err)?;
        Ok(match row {
            None => CachedDoc {
                body: None,
                index: Vec::new(),
                stored: Some(None),
                dirty: false,
            },
            Some((body, idx)) => {
                let body: Value =
                    serde_json::from_str(&body).map_err(|e| corrupt(collection, key, e))?;
                let index = parse_entries(collection, key, &idx)?;
                CachedDoc {
                    body: Some(Body::Value(body)),
                    index: index.clone(),
                    stored: Some(Some(index)),
                    dirty: false,
                }
            }
        })
    }

    fn set(
        &mut self,
        collection: &str,
        key: &str,
        body: Option<Body>,
        index: Vec<Entry>,
    ) -> Result<(), ReadModelError> {
        if !self.docs.contains_key(collection) {
            self.docs.insert(collection.to_owned(), HashMap::new());
        }
        // Present: inserted just above when missing.
        let Some(by_key) = self.docs.get_mut(collection) else {
            return Err(ReadModelError::Internal(
                "batch cache lost a collection".into(),
            ));
        };
        match by_key.get_mut(key) {
            Some(doc) => {
                doc.body = body;
                doc.index = index;
                doc.dirty = true;
            }
            None => {
                by_key.insert(
                    key.to_owned(),
                    CachedDoc {
                        body,
                        index,
                        stored: None,
                        dirty: true,
                    },
                );
            }
        }
        Ok(())
    }

    /// What the batch will write, without its reader: the caller can end the reader's snapshot
    /// before it takes the writer.
    pub(super) fn into_writes(self) -> BatchWrites {
        BatchWrites {
            docs: self.docs,
            applied: self.applied,
        }
    }
}

/// The documents and applied sequences of a [`SqliteBatch`], ready to be written.
pub(super) struct BatchWrites {
    docs: HashMap<String, HashMap<String, CachedDoc>>,
    applied: Vec<(String, String, i64)>,
}

impl BatchWrites {
    /// Writes every dirty document and the index entries that changed.
    ///
    /// A document the batch did not read is first inserted with `ON CONFLICT DO NOTHING`: when
    /// that inserts (the common case in a rebuild: timeline entries, new orders) there are no old
    /// index entries to look up. Otherwise the stored entries are read and only the difference is
    /// written.
    pub(super) fn flush(self, conn: &Connection) -> Result<(), ReadModelError> {
        let mut record_applied = conn
            .prepare_cached(
                "INSERT INTO rm_applied (projection, stream, last_seq) VALUES (?1, ?2, ?3)
                 ON CONFLICT (projection, stream) DO UPDATE SET last_seq = excluded.last_seq",
            )
            .map_err(sql_err)?;
        for (projection, stream, seq) in &self.applied {
            record_applied
                .execute(params![projection, stream, seq])
                .map_err(sql_err)?;
        }
        let mut select_idx = conn
            .prepare_cached("SELECT idx FROM rm_docs WHERE collection = ?1 AND key = ?2")
            .map_err(sql_err)?;
        let mut insert_new_doc = conn
            .prepare_cached(
                "INSERT INTO rm_docs (collection, key, body, idx) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (collection, key) DO NOTHING",
            )
            .map_err(sql_err)?;
        let mut update_doc = conn
            .prepare_cached(
                "UPDATE rm_docs SET body = ?3, idx = ?4 WHERE collection = ?1 AND key = ?2",
            )
            .map_err(sql_err)?;
        let mut delete_doc = conn
            .prepare_cached("DELETE FROM rm_docs WHERE collection = ?1 AND key = ?2")
            .map_err(sql_err)?;
        let mut insert_entry = conn
            .prepare_cached(
                "INSERT OR IGNORE INTO rm_index (index_name, partition, sort, collection, key)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(sql_err)?;
        let mut delete_entry = conn
            .prepare_cached(
                "DELETE FROM rm_index WHERE index_name = ?1 AND partition = ?2 AND sort = ?3
                 AND collection = ?4 AND key = ?5",
            )
            .map_err(sql_err)?;

        for (collection, by_key) in &self.docs {
            for (key, doc) in by_key.iter().filter(|(_, d)| d.dirty) {
                let encoded = match &doc.body {
                    Some(body) => {
                        let text = match body {
                            Body::Json(text) => std::borrow::Cow::Borrowed(text.as_str()),
                            Body::Value(value) => std::borrow::Cow::Owned(
                                serde_json::to_string(value)
                                    .map_err(|e| corrupt(collection, key, e))?,
                            ),
                        };
                        let idx = serde_json::to_string(&doc.index)
                            .map_err(|e| corrupt(collection, key, e))?;
                        Some((text, idx))
                    }
                    None => None,
                };
                // The cheap path for documents not known to exist.
                if let Some((body, idx)) = &encoded {
                    if !matches!(doc.stored, Some(Some(_))) {
                        let inserted = insert_new_doc
                            .execute(params![collection, key, body, idx])
                            .map_err(sql_err)?;
                        if inserted == 1 {
                            for (i, p, s) in &doc.index {
                                insert_entry
                                    .execute(params![i, p, s, collection, key])
                                    .map_err(sql_err)?;
                            }
                            continue;
                        }
                    }
                }
                let loaded;
                let stored: Option<&[Entry]> = match &doc.stored {
                    Some(Some(entries)) => Some(entries),
                    // Unknown (a delete, or the insert above conflicted): look it up.
                    Some(None) | None => {
                        let idx: Option<String> = select_idx
                            .query_row(params![collection, key], |r| r.get(0))
                            .optional()
                            .map_err(sql_err)?;
                        loaded = idx
                            .map(|t| parse_entries(collection, key, &t))
                            .transpose()?;
                        loaded.as_deref()
                    }
                };
                let old: &[Entry] = stored.unwrap_or(&[]);
                let new: &[Entry] = if encoded.is_some() { &doc.index } else { &[] };
                // Both lists are sorted and deduplicated: remove what went, add what came.
                for (i, p, s) in old.iter().filter(|e| new.binary_search(e).is_err()) {
                    delete_entry
                        .execute(params![i, p, s, collection, key])
                        .map_err(sql_err)?;
                }
                for (i, p, s) in new.iter().filter(|e| old.binary_search(e).is_err()) {
                    insert_entry
                        .execute(params![i, p, s, collection, key])
                        .map_err(sql_err)?;
                }
                match (&encoded, stored.is_some()) {
                    (Some((body, idx)), true) => {
                        update_doc
                            .execute(params![collection, key, body, idx])
                            .map_err(sql_err)?;
                    }
                    (Some((body, idx)), false) => {
                        insert_new_doc
                            .execute(params![collection, key, body, idx])
                            .map_err(sql_err)?;
                    }
                    (None, true) => {
                        delete_doc
                            .execute(params![collection, key])
                            .map_err(sql_err)?;
                    }
                    (None, false) => {}
                }
            }
        }
        Ok(())
    }
}

impl SqliteBatch<'_> {
    /// The cached document, loading it from the database on first use; a body held as JSON
    /// text is parsed.
    fn cached(&mut self, collection: &str, key: &str) -> Result<&CachedDoc, ReadModelError> {
        let cached = self
            .docs
            .get(collection)
            .is_some_and(|m| m.contains_key(key));
        if !cached {
            let doc = self.load(collection, key)?;
            self.docs
                .entry(collection.to_owned())
                .or_default()
                .insert(key.to_owned(), doc);
        }
        // Present: found or inserted just above.
        let doc = self
            .docs
            .get_mut(collection)
            .and_then(|m| m.get_mut(key))
            .ok_or_else(|| ReadModelError::Internal("batch cache lost a document".into()))?;
        if let Some(Body::Json(text)) = &doc.body {
            let value = serde_json::from_str(text).map_err(|e| corrupt(collection, key, e))?;
            doc.body = Some(Body::Value(value));
        }
        Ok(doc)
    }

    fn body(doc: &CachedDoc) -> Option<&Value> {
        match &doc.body {
            Some(Body::Value(v)) => Some(v),
            // `cached` parses text bodies before anyone reads them.
            Some(Body::Json(_)) | None => None,
        }
    }
}

impl DocTx for SqliteBatch<'_> {
    fn get(&mut self, collection: &str, key: &str) -> Result<Option<Value>, ReadModelError> {
        Ok(Self::body(self.cached(collection, key)?).cloned())
    }

    fn read_with(
        &mut self,
        collection: &str,
        key: &str,
        read: &mut dyn FnMut(Option<&Value>),
    ) -> Result<(), ReadModelError> {
        read(Self::body(self.cached(collection, key)?));
        Ok(())
    }

    fn put(
        &mut self,
        collection: &str,
        key: &str,
        body: Value,
        index: Vec<IndexEntry>,
    ) -> Result<(), ReadModelError> {
        self.set(
            collection,
            key,
            Some(Body::Value(body)),
            owned_entries(index),
        )
    }

    fn put_json(
        &mut self,
        collection: &str,
        key: &str,
        json: String,
        index: Vec<IndexEntry>,
    ) -> Result<(), ReadModelError> {
        self.set(
            collection,
            key,
            Some(Body::Json(json)),
            owned_entries(index),
        )
    }

    fn delete(&mut self, collection: &str, key: &str) -> Result<(), ReadModelError> {
        self.set(collection, key, None, Vec::new())
    }
}

impl BatchTx for SqliteBatch<'_> {
    fn last_applied(
        &mut self,
        projection: &str,
        stream: &commands::StreamRef,
    ) -> Result<u64, ReadModelError> {
        let seq: Option<i64> = self
            .reader
            .prepare_cached("SELECT last_seq FROM rm_applied WHERE projection = ?1 AND stream = ?2")
            .map_err(sql_err)?
            .query_row(params![projection, stream.key()], |r| r.get(0))
            .optional()
            .map_err(sql_err)?;
        Ok(seq.map_or(0, |s| u64::try_from(s).unwrap_or(0)))
    }

    fn record_applied(
        &mut self,
        projection: &str,
        stream: &commands::StreamRef,
        sequence: u64,
    ) -> Result<(), ReadModelError> {
        let seq = i64::try_from(sequence)
            .map_err(|_| ReadModelError::Internal(format!("sequence {sequence} out of range")))?;
        self.applied
            .push((projection.to_owned(), stream.key(), seq));
        Ok(())
    }
}
