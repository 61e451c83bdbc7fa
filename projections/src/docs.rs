//! Typed documents over the transaction port: a projection reads, changes and writes its
//! documents in its own types, and the adapter holds them for the rest of the batch.

use crate::store::{Decode, DocKey, DocTx, Document, EncodedDoc, IndexEntry, ProjectionError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::any::Any;

/// A document of type `T` held by a transaction, with the function that lists its index
/// entries. `doc` is `None` only while [`update_doc`] lets a change remove it.
pub struct Doc<T> {
    doc: Option<T>,
    index: fn(&T) -> Vec<IndexEntry>,
}

impl<T> Doc<T> {
    pub fn new(doc: T, index: fn(&T) -> Vec<IndexEntry>) -> Self {
        Self {
            doc: Some(doc),
            index,
        }
    }
}

impl<T: Serialize + Send + 'static> Document for Doc<T> {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn encode(&self) -> Result<EncodedDoc, serde_json::Error> {
        let doc = self
            .doc
            .as_ref()
            .ok_or_else(|| serde::ser::Error::custom("a removed document was kept"))?;
        Ok(EncodedDoc {
            body: serde_json::to_string(doc)?,
            index: (self.index)(doc),
        })
    }
}

/// No secondary index entries.
pub fn no_index<T>(_: &T) -> Vec<IndexEntry> {
    Vec::new()
}

fn corrupt(collection: &str, key: &str, e: impl ToString) -> ProjectionError {
    ProjectionError::CorruptDoc {
        collection: collection.to_owned(),
        key: key.to_owned(),
        reason: e.to_string(),
    }
}

/// The batch's document at (collection, key) as a `T`. A document the batch holds in another
/// type (read as JSON by one projection step, typed by the next) is re-read as `T`.
fn held<'t, T>(
    tx: &'t mut dyn DocTx,
    collection: &str,
    key: &str,
    index: fn(&T) -> Vec<IndexEntry>,
) -> Result<Option<&'t mut Doc<T>>, ProjectionError>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    let decode = |text: &str| -> Result<Box<dyn Document>, ProjectionError> {
        let doc = serde_json::from_str::<T>(text).map_err(|e| corrupt(collection, key, e))?;
        Ok(Box::new(Doc::new(doc, index)))
    };
    let decode: &Decode<'_> = &decode;
    let at = DocKey::new(collection, key);
    let retype = match tx.get(at, decode)? {
        None => return Ok(None),
        Some(doc) => {
            if doc.as_any_mut().is::<Doc<T>>() {
                None
            } else {
                Some(EncodedDoc::of(&*doc, collection, key)?)
            }
        }
    };
    if let Some(other) = retype {
        tx.put(at, decode(&other.body)?)?;
    }
    tx.get(at, decode)?
        .and_then(|doc| doc.as_any_mut().downcast_mut::<Doc<T>>())
        .map(Some)
        .ok_or_else(|| corrupt(collection, key, "the batch lost the document"))
}

/// Reads, changes and writes one typed document. `change` gets `None` when the document does
/// not exist; leaving `None` writes nothing, setting `None` deletes it. `index` lists the
/// document's index entries when it is written.
pub fn update_doc<T, R>(
    tx: &mut dyn DocTx,
    collection: &str,
    key: &str,
    index: fn(&T) -> Vec<IndexEntry>,
    change: impl FnOnce(&mut Option<T>) -> R,
) -> Result<R, ProjectionError>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    let (result, removed) = match held(tx, collection, key, index)? {
        Some(held) => {
            let result = change(&mut held.doc);
            (result, held.doc.is_none())
        }
        None => {
            let mut fresh = None;
            let result = change(&mut fresh);
            if let Some(doc) = fresh {
                tx.put(DocKey::new(collection, key), Box::new(Doc::new(doc, index)))?;
            }
            return Ok(result);
        }
    };
    if removed {
        tx.delete(DocKey::new(collection, key))?;
    }
    Ok(result)
}

/// A copy of one typed document.
pub fn peek_doc<T>(
    tx: &mut dyn DocTx,
    collection: &str,
    key: &str,
    index: fn(&T) -> Vec<IndexEntry>,
) -> Result<Option<T>, ProjectionError>
where
    T: Serialize + DeserializeOwned + Clone + Send + 'static,
{
    Ok(held(tx, collection, key, index)?.and_then(|held| held.doc.clone()))
}

/// Writes a whole document without reading it first.
pub fn put_doc<T>(
    tx: &mut dyn DocTx,
    collection: &str,
    key: &str,
    doc: T,
    index: fn(&T) -> Vec<IndexEntry>,
) -> Result<(), ProjectionError>
where
    T: Serialize + Send + 'static,
{
    tx.put(DocKey::new(collection, key), Box::new(Doc::new(doc, index)))?;
    Ok(())
}
