//! Line quantities: whole units from 1 to [`MAX_QUANTITY`].

use std::fmt;

/// Largest quantity of one product on one cart or order line.
pub const MAX_QUANTITY: u32 = 99;

/// A quantity outside 1..=[`MAX_QUANTITY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("quantity must be between 1 and 99, got {value}")]
pub struct QuantityError {
    pub value: u32,
}

/// A validated line quantity; serialized as a plain number and validated on deserialize.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "u32", into = "u32")]
pub struct Quantity(u32);

impl Quantity {
    pub const ONE: Quantity = Quantity(1);
    pub const MAX: Quantity = Quantity(MAX_QUANTITY);

    pub fn parse(value: u32) -> Result<Quantity, QuantityError> {
        if (1..=MAX_QUANTITY).contains(&value) {
            Ok(Quantity(value))
        } else {
            Err(QuantityError { value })
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }

    /// Adds two quantities; the sum must stay within the limit. The error carries the sum.
    pub fn checked_add(self, other: Quantity) -> Result<Quantity, QuantityError> {
        // Both are at most 99, so the u32 sum cannot overflow.
        Quantity::parse(self.0 + other.0)
    }
}

impl TryFrom<u32> for Quantity {
    type Error = QuantityError;

    fn try_from(value: u32) -> Result<Self, Self::Error> {
        Quantity::parse(value)
    }
}

impl From<Quantity> for u32 {
    fn from(q: Quantity) -> u32 {
        q.0
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
