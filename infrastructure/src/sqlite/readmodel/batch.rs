//! One read-model batch: the documents it holds, typed, in front of SQLite.
//!
//! Reads go to the batch's documents first, then to the `reader` connection (a snapshot), whose
//! JSON the reader's `decode` turns into its typed document; writes only replace the held
//! document, and applied sequences are only remembered. [`SqliteBatch::into_writes`] then
//! encodes each held document once and keeps those that differ from what is stored, and
//! [`BatchWrites::flush`] writes them on the writer connection inside its transaction, with only
//! the index entries that changed, and the applied sequences, through cached prepared
//! statements. A rebuild batch touching one order document twenty times decodes and writes it
//! once.

use super::{prepare, read_last_applied, sql_err};
use commands::StreamRef;
use projections::store::{
    corrupt, BatchTx, Decode, DocKey, DocTx, Document, EncodedDoc, HeldDoc, IndexEntry,
    ReadModelResult,
};
use projections::{ProjectionError, ReadModelError};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;

/// `(index, partition, sort)`, sorted and deduplicated within a document.
pub(super) type Entry = (String, String, String);

/// A document's body text and index entries, as stored or about to be.
type Stored = (String, Vec<Entry>);

struct CachedDoc {
    /// The document as the batch holds it (`None`: absent or deleted).
    doc: Option<Box<dyn Document>>,
    /// What the database holds: `None` until the batch reads it, `Some(None)` when there is no
    /// such document.
    stored: Option<Option<Stored>>,
}

pub(super) struct SqliteBatch<'c> {
    /// Where documents and applied sequences are read from.
    reader: &'c Connection,
    /// Whose applied sequences these are.
    projection: &'static str,
    /// collection -> key -> document; nested so that lookups need no allocation.
    docs: HashMap<String, HashMap<String, CachedDoc>>,
    /// (stream key, last sequence) to record.
    applied: Vec<(String, i64)>,
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
    /// A batch of `projection` (`""` for a write that records no sequences).
    pub(super) fn new(reader: &'c Connection, projection: &'static str) -> Self {
        Self {
            reader,
            projection,
            docs: HashMap::new(),
            applied: Vec::new(),
        }
    }

    fn load(
        &self,
        collection: &str,
        key: &str,
        decode: &Decode<'_>,
    ) -> Result<CachedDoc, ProjectionError> {
        let row: Option<(String, String)> = prepare(
            self.reader,
            "SELECT body, idx FROM rm_docs WHERE collection = ?1 AND key = ?2",
        )?
        .query_row(params![collection, key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(sql_err)?;
        Ok(match row {
            None => CachedDoc {
                doc: None,
                stored: Some(None),
            },
            Some((body, idx)) => CachedDoc {
                doc: Some(decode(&body)?),
                stored: Some(Some((body, parse_entries(collection, key, &idx)?))),
            },
        })
    }

    fn set(&mut self, at: DocKey<'_>, doc: Option<Box<dyn Document>>) {
        let DocKey { collection, key } = at;
        if !self.docs.contains_key(collection) {
            self.docs.insert(collection.to_owned(), HashMap::new());
        }
        if let Some(by_key) = self.docs.get_mut(collection) {
            match by_key.get_mut(key) {
                Some(cached) => cached.doc = doc,
                None => {
                    by_key.insert(key.to_owned(), CachedDoc { doc, stored: None });
                }
            }
        }
    }

    /// What the batch will write: each held document encoded once, those equal to what is
    /// stored left out. Taken without the reader, so the caller can end the reader's snapshot
    /// before it takes the writer.
    pub(super) fn into_writes(self) -> Result<BatchWrites, ReadModelError> {
        let mut docs = Vec::new();
        for (collection, by_key) in self.docs {
            for (key, cached) in by_key {
                let new = match &cached.doc {
                    Some(doc) => {
                        let encoded = EncodedDoc::of(doc.as_ref(), &collection, &key)?;
                        Some((encoded.body, owned_entries(encoded.index)))
                    }
                    None => None,
                };
                let unchanged = match (&cached.stored, &new) {
                    (Some(Some(old)), Some(new)) => old == new,
                    (Some(None), None) => true,
                    _ => false,
                };
                if !unchanged {
                    let stored = cached.stored.map(|s| s.map(|(_, index)| index));
                    docs.push(DocWrite {
                        collection: collection.clone(),
                        key,
                        new,
                        stored,
                    });
                }
            }
        }
        Ok(BatchWrites {
            docs,
            projection: self.projection,
            applied: self.applied,
        })
    }
}

/// One document to write.
struct DocWrite {
    collection: String,
    key: String,
    /// `None`: delete it.
    new: Option<Stored>,
    /// The index entries stored in the database: `None` until known, `Some(None)` when the
    /// database has no such document.
    stored: Option<Option<Vec<Entry>>>,
}

/// The documents and applied sequences of a [`SqliteBatch`], ready to be written.
pub(super) struct BatchWrites {
    docs: Vec<DocWrite>,
    projection: &'static str,
    applied: Vec<(String, i64)>,
}

impl BatchWrites {
    /// Writes each changed document and the index entries that changed.
    ///
    /// A document the batch did not read is first inserted with `ON CONFLICT DO NOTHING`: when
    /// that inserts (the common case in a rebuild: timeline entries, new orders) there are no old
    /// index entries to look up. Otherwise the stored entries are read and only the difference is
    /// written.
    pub(super) fn flush(self, conn: &Connection) -> Result<(), ReadModelError> {
        let mut record_applied = prepare(
            conn,
            "INSERT INTO rm_applied (projection, stream, last_seq) VALUES (?1, ?2, ?3)
             ON CONFLICT (projection, stream) DO UPDATE SET last_seq = excluded.last_seq",
        )?;
        for (stream, seq) in &self.applied {
            record_applied
                .execute(params![self.projection, stream, seq])
                .map_err(sql_err)?;
        }
        let mut select_idx = prepare(
            conn,
            "SELECT idx FROM rm_docs WHERE collection = ?1 AND key = ?2",
        )?;
        let mut insert_new_doc = prepare(
            conn,
            "INSERT INTO rm_docs (collection, key, body, idx) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (collection, key) DO NOTHING",
        )?;
        let mut update_doc = prepare(
            conn,
            "UPDATE rm_docs SET body = ?3, idx = ?4 WHERE collection = ?1 AND key = ?2",
        )?;
        let mut delete_doc = prepare(
            conn,
            "DELETE FROM rm_docs WHERE collection = ?1 AND key = ?2",
        )?;
        let mut insert_entry = prepare(
            conn,
            "INSERT OR IGNORE INTO rm_index (index_name, partition, sort, collection, key)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut delete_entry = prepare(
            conn,
            "DELETE FROM rm_index WHERE index_name = ?1 AND partition = ?2 AND sort = ?3
             AND collection = ?4 AND key = ?5",
        )?;

        for DocWrite {
            collection,
            key,
            new,
            stored,
        } in &self.docs
        {
            let encoded = match new {
                Some((body, index)) => {
                    let idx =
                        serde_json::to_string(index).map_err(|e| corrupt(collection, key, e))?;
                    Some((body, idx, index.as_slice()))
                }
                None => None,
            };
            // The cheap path for documents not known to exist.
            if let Some((body, idx, index)) = &encoded {
                if !matches!(stored, Some(Some(_))) {
                    let inserted = insert_new_doc
                        .execute(params![collection, key, body, idx])
                        .map_err(sql_err)?;
                    if inserted == 1 {
                        for (i, p, s) in *index {
                            insert_entry
                                .execute(params![i, p, s, collection, key])
                                .map_err(sql_err)?;
                        }
                        continue;
                    }
                }
            }
            let loaded;
            let stored: Option<&[Entry]> = match stored {
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
            let new: &[Entry] = encoded.as_ref().map_or(&[], |(_, _, index)| index);
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
                (Some((body, idx, _)), true) => {
                    update_doc
                        .execute(params![collection, key, body, idx])
                        .map_err(sql_err)?;
                }
                (Some((body, idx, _)), false) => {
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
        Ok(())
    }
}

impl DocTx for SqliteBatch<'_> {
    fn get(&mut self, at: DocKey<'_>, decode: &Decode<'_>) -> Result<HeldDoc<'_>, ProjectionError> {
        let DocKey { collection, key } = at;
        let cached = self
            .docs
            .get(collection)
            .is_some_and(|m| m.contains_key(key));
        if !cached {
            let doc = self.load(collection, key, decode)?;
            self.docs
                .entry(collection.to_owned())
                .or_default()
                .insert(key.to_owned(), doc);
        }
        Ok(self
            .docs
            .get_mut(collection)
            .and_then(|m| m.get_mut(key))
            .and_then(|cached| cached.doc.as_deref_mut()))
    }

    fn put(&mut self, at: DocKey<'_>, doc: Box<dyn Document>) -> ReadModelResult<()> {
        self.set(at, Some(doc));
        Ok(())
    }

    fn delete(&mut self, at: DocKey<'_>) -> ReadModelResult<()> {
        self.set(at, None);
        Ok(())
    }
}

impl BatchTx for SqliteBatch<'_> {
    fn last_applied(&mut self, stream: &StreamRef) -> ReadModelResult<u64> {
        read_last_applied(self.reader, self.projection, &stream.key())
    }

    fn record_applied(&mut self, stream: &StreamRef, sequence: u64) -> ReadModelResult<()> {
        let seq = i64::try_from(sequence)
            .map_err(|_| ReadModelError::Internal(format!("sequence {sequence} out of range")))?;
        self.applied.push((stream.key(), seq));
        Ok(())
    }
}
