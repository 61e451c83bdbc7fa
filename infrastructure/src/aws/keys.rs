//! The customers' data keys in DynamoDB: the AWS [`KeyStore`].
//!
//! One item per customer in the keys table: `customer` (pk), `key_id`, the key itself, and
//! `erased_at` once they were erased. The key is kept either as `material` (32 bytes) or, with a
//! KMS key configured (`--kms-key-id`), as `wrapped`: the ciphertext of KMS `GenerateDataKey`
//! under that key, with the customer id as encryption context, so reading it needs both the
//! table and `kms:Decrypt`. A new key is set with a condition (no key yet), so concurrent
//! creators agree on one; an erasure removes the key attributes in one write, which DynamoDB
//! keeps no older version of.

use super::ddb::get_item;
use super::error::{classify, RetryPolicy};
use super::metrics::RequestCounters;
use async_trait::async_trait;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use commands::{CustomerKeys, DataKey, KeyStore, StoreError};
use std::collections::HashMap;

/// The encryption context every wrapped key is bound to.
const CONTEXT_KEY: &str = "backbone:customer";

/// Wraps data keys with one KMS key.
#[derive(Debug, Clone)]
pub struct KmsWrapping {
    pub client: aws_sdk_kms::Client,
    /// A key id, ARN or alias.
    pub key_id: String,
}

pub struct DynamoKeyStore {
    client: Client,
    table: String,
    kms: Option<KmsWrapping>,
    retry: RetryPolicy,
    counters: RequestCounters,
}

type Item = HashMap<String, AttributeValue>;

fn customer_key(customer: &str) -> Item {
    HashMap::from([(
        "customer".to_owned(),
        AttributeValue::S(customer.to_owned()),
    )])
}

fn corrupt(customer: &str, what: &str) -> StoreError {
    StoreError::Internal(format!("the data key of customer {customer} is {what}"))
}

impl DynamoKeyStore {
    pub fn new(client: Client, table: impl Into<String>, kms: Option<KmsWrapping>) -> Self {
        Self {
            client,
            table: table.into(),
            kms,
            retry: RetryPolicy::default(),
            counters: RequestCounters::default(),
        }
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// A fresh key, and the attribute that keeps it: `material`, or `wrapped` under KMS.
    async fn fresh(&self, customer: &str) -> Result<(DataKey, &'static str, Vec<u8>), StoreError> {
        let Some(kms) = &self.kms else {
            let key = DataKey::generate()?;
            let material = key.material().to_vec();
            return Ok((key, "material", material));
        };
        let out = kms
            .client
            .generate_data_key()
            .key_id(&kms.key_id)
            .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
            .encryption_context(CONTEXT_KEY, customer)
            .send()
            .await
            .map_err(|e| StoreError::from(classify("GenerateDataKey", &e)))?;
        let plain: [u8; 32] = out
            .plaintext
            .map(|b| b.into_inner())
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| corrupt(customer, "not 32 bytes from KMS"))?;
        let wrapped = out
            .ciphertext_blob
            .map(|b| b.into_inner())
            .ok_or_else(|| corrupt(customer, "missing its KMS ciphertext"))?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        Ok((DataKey::new(id, plain), "wrapped", wrapped))
    }

    async fn unwrap_key(&self, customer: &str, wrapped: &[u8]) -> Result<[u8; 32], StoreError> {
        let kms = self
            .kms
            .as_ref()
            .ok_or_else(|| corrupt(customer, "wrapped by KMS, but no --kms-key-id is set"))?;
        let out = kms
            .client
            .decrypt()
            .key_id(&kms.key_id)
            .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(wrapped))
            .encryption_context(CONTEXT_KEY, customer)
            .send()
            .await
            .map_err(|e| StoreError::from(classify("Decrypt", &e)))?;
        out.plaintext
            .map(|b| b.into_inner())
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| corrupt(customer, "not 32 bytes after unwrapping"))
    }

    async fn read(&self, customer: &str) -> Result<CustomerKeys, StoreError> {
        let item = self
            .retry
            .retry("GetItem", |_| {
                get_item(
                    &self.client,
                    &self.counters,
                    &self.table,
                    customer_key(customer),
                )
            })
            .await?;
        let Some(item) = item else {
            return Ok(CustomerKeys::default());
        };
        let erased = item.contains_key("erased_at");
        let id = item.get("key_id").and_then(|v| v.as_s().ok());
        let material = match (item.get("material"), item.get("wrapped")) {
            (Some(AttributeValue::B(b)), _) => Some(
                <[u8; 32]>::try_from(b.as_ref()).map_err(|_| corrupt(customer, "not 32 bytes"))?,
            ),
            (None, Some(AttributeValue::B(w))) => {
                Some(self.unwrap_key(customer, w.as_ref()).await?)
            }
            _ => None,
        };
        let key = match (id, material) {
            (Some(id), Some(material)) => Some(DataKey::new(id.clone(), material)),
            _ => None,
        };
        Ok(CustomerKeys { key, erased })
    }
}

#[async_trait]
impl KeyStore for DynamoKeyStore {
    async fn key_for(&self, customer: &str) -> Result<DataKey, StoreError> {
        if let Some(key) = self.read(customer).await?.key {
            return Ok(key);
        }
        let (key, attribute, bytes) = self.fresh(customer).await?;
        let set = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(customer_key(customer)))
            .update_expression("SET #id = :id, #k = :k")
            .condition_expression("attribute_not_exists(#id)")
            .expression_attribute_names("#id", "key_id")
            .expression_attribute_names("#k", attribute)
            .expression_attribute_values(":id", AttributeValue::S(key.id().to_owned()))
            .expression_attribute_values(":k", AttributeValue::B(Blob::new(bytes)))
            .send()
            .await;
        match set {
            Ok(_) => Ok(key),
            // Another caller set one first: theirs is the key.
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => self
                .read(customer)
                .await?
                .key
                .ok_or_else(|| corrupt(customer, "gone right after it was set")),
            Err(e) => Err(classify("UpdateItem", &e).into()),
        }
    }

    async fn lookup(&self, customer: &str) -> Result<CustomerKeys, StoreError> {
        self.read(customer).await
    }

    async fn erase(&self, customer: &str) -> Result<(), StoreError> {
        let at = chrono::Utc::now().to_rfc3339();
        self.retry
            .send("UpdateItem", || {
                self.client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(customer_key(customer)))
                    // Every name through a placeholder: `wrapped` is a reserved word.
                    .update_expression("SET #e = :at REMOVE #id, #m, #w")
                    .expression_attribute_names("#e", "erased_at")
                    .expression_attribute_names("#id", "key_id")
                    .expression_attribute_names("#m", "material")
                    .expression_attribute_names("#w", "wrapped")
                    .expression_attribute_values(":at", AttributeValue::S(at.clone()))
                    .send()
            })
            .await?;
        Ok(())
    }
}
