//! Money and currencies. Amounts are exact: an integer count of the currency's minor units,
//! exposed as a `Decimal` at exactly the currency's scale. No floating point anywhere.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cmp::Ordering;
use std::fmt;

pub use rust_decimal::Decimal;

/// An ISO-4217 currency from the built-in table, with its number of minor units.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: &'static str,
    minor_units: u32,
}

macro_rules! currencies {
    ($($name:ident = $minor:literal),+ $(,)?) => {
        impl Currency {
            $(
                #[doc = concat!("The ", stringify!($name), " currency.")]
                pub const $name: Currency = Currency { code: stringify!($name), minor_units: $minor };
            )+
            /// Every supported currency.
            pub const ALL: &'static [Currency] = &[$(Currency::$name),+];
        }
    };
}

currencies! {
    USD = 2, EUR = 2, GBP = 2, JPY = 0, CHF = 2, CAD = 2, AUD = 2, SEK = 2, NOK = 2, DKK = 2,
    PLN = 2, CZK = 2, KRW = 0, BHD = 3, KWD = 3, JOD = 3, TND = 3, ISK = 0, HUF = 2,
    NZD = 2, SGD = 2, HKD = 2, MXN = 2, BRL = 2, INR = 2, CNY = 2, ZAR = 2, RON = 2, BGN = 2,
    ILS = 2, AED = 2, TRY = 2, THB = 2, CLP = 0, VND = 0, OMR = 3,
}

impl Currency {
    /// Parses an upper-case ISO-4217 code from the built-in table, for example `"EUR"`.
    pub fn parse(code: &str) -> Result<Currency, MoneyError> {
        Currency::ALL
            .iter()
            .find(|c| c.code == code)
            .copied()
            .ok_or_else(|| MoneyError::UnknownCurrency(code.to_owned()))
    }

    /// The three-letter code, for example `"EUR"`.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// Number of decimal places of the currency's minor unit (JPY 0, EUR 2, BHD 3).
    pub fn minor_units(&self) -> u32 {
        self.minor_units
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.code)
    }
}

impl std::str::FromStr for Currency {
    type Err = MoneyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::parse(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        Currency::parse(&code).map_err(serde::de::Error::custom)
    }
}

/// Why a money value could not be built or combined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("currency mismatch: {left} and {right}")]
    CurrencyMismatch { left: Currency, right: Currency },
    #[error("unknown currency {0:?}")]
    UnknownCurrency(String),
    #[error("amount {amount} has more decimal places than {currency} allows")]
    TooPrecise { amount: Decimal, currency: Currency },
    #[error("money cannot be negative")]
    Negative,
    #[error("money amount out of range")]
    Overflow,
    #[error("invalid amount {0:?}")]
    InvalidAmount(String),
}

/// A non-negative amount of one currency.
///
/// Held as an integer number of minor units (cents), so that arithmetic is exact and `to_minor`
/// cannot fail; `amount()` is always at exactly the currency's scale (`12.50`, never `12.5`).
/// Serialized as `{"amount":"12.50","currency":"EUR"}`, the amount being a string.
#[derive(Clone, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(as = MoneySchema, description = "How money looks on the wire.")
)]
pub struct Money {
    #[cfg_attr(
        feature = "openapi",
        schema(rename = "amount", value_type = String, example = "12.50")
    )]
    minor: i64,
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "EUR"))]
    currency: Currency,
}

impl Money {
    /// Builds money from a decimal amount. Rejects negatives, amounts with more decimal places
    /// than the currency has (after dropping trailing zeros), and amounts whose minor-unit count
    /// does not fit an `i64`.
    pub fn new(amount: Decimal, currency: Currency) -> Result<Money, MoneyError> {
        if amount.is_sign_negative() && !amount.is_zero() {
            return Err(MoneyError::Negative);
        }
        let normalized = amount.normalize();
        if normalized.scale() > currency.minor_units {
            return Err(MoneyError::TooPrecise { amount, currency });
        }
        let minor = normalized
            .checked_mul(Decimal::from(minor_factor(currency)))
            .ok_or(MoneyError::Overflow)?;
        // `minor` is integral here (its scale was at most the currency's minor units), so the
        // conversion below only fails when the value is out of `i64` range.
        let minor =
            rust_decimal::prelude::ToPrimitive::to_i64(&minor).ok_or(MoneyError::Overflow)?;
        Money::from_minor(minor, currency)
    }

    /// Zero of a currency.
    pub fn zero(currency: Currency) -> Money {
        Money { minor: 0, currency }
    }

    /// Builds money from a count of minor units (as payment providers such as Stripe use).
    pub fn from_minor(minor: i64, currency: Currency) -> Result<Money, MoneyError> {
        if minor < 0 {
            return Err(MoneyError::Negative);
        }
        Ok(Money { minor, currency })
    }

    /// Parses a plain decimal string (`"12.50"`, `"3"`) and a currency code.
    ///
    /// Only digits with an optional single decimal point are accepted: no sign, exponent,
    /// separators or whitespace. A leading minus is reported as [`MoneyError::Negative`].
    pub fn parse(amount: &str, currency: &str) -> Result<Money, MoneyError> {
        let currency = Currency::parse(currency)?;
        Money::new(parse_plain_decimal(amount)?, currency)
    }

    /// The amount, at exactly the currency's scale.
    pub fn amount(&self) -> Decimal {
        Decimal::new(self.minor, self.currency.minor_units)
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The amount in minor units (cents for EUR, yen for JPY).
    pub fn to_minor(&self) -> i64 {
        self.minor
    }

    pub fn is_zero(&self) -> bool {
        self.minor == 0
    }

    pub fn checked_add(&self, other: &Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let minor = self
            .minor
            .checked_add(other.minor)
            .ok_or(MoneyError::Overflow)?;
        Money::from_minor(minor, self.currency)
    }

    /// Subtracts; the result must not be negative.
    pub fn checked_sub(&self, other: &Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        // Both operands are non-negative, so the difference cannot overflow.
        Money::from_minor(self.minor - other.minor, self.currency)
    }

    /// Multiplies by a quantity, exactly.
    pub fn multiply(&self, qty: u32) -> Result<Money, MoneyError> {
        let minor = self
            .minor
            .checked_mul(i64::from(qty))
            .ok_or(MoneyError::Overflow)?;
        Money::from_minor(minor, self.currency)
    }

    /// Compares two amounts of the same currency.
    pub fn cmp_amount(&self, other: &Money) -> Result<Ordering, MoneyError> {
        self.same_currency(other)?;
        Ok(self.minor.cmp(&other.minor))
    }

    /// Adds up amounts that must all be in `currency`; an empty iterator gives zero.
    pub fn sum<'a, I>(currency: Currency, amounts: I) -> Result<Money, MoneyError>
    where
        I: IntoIterator<Item = &'a Money>,
    {
        amounts
            .into_iter()
            .try_fold(Money::zero(currency), |acc, m| acc.checked_add(m))
    }

    fn same_currency(&self, other: &Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch {
                left: self.currency,
                right: other.currency,
            })
        }
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Money({self})")
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount(), self.currency)
    }
}

/// The wire shape of [`Money`]: the amount travels as a string so that no JSON reader turns it
/// into a float.
#[derive(Serialize, Deserialize)]
struct MoneyWire {
    amount: String,
    currency: Currency,
}

/// Writes `minor / 10^units` in plain decimal notation (what `Decimal`'s `Display` writes for
/// the same value and scale: all `units` decimals kept) into `buf`, without the formatting
/// machinery: replies carry many amounts.
fn format_minor(minor: i64, units: u32, buf: &mut [u8; 32]) -> &str {
    let units = units as usize;
    let mut digits = minor.unsigned_abs();
    let mut at = buf.len();
    let mut written = 0;
    // Digits from the right; at least `units + 1` of them, so there is a leading "0.".
    while digits > 0 || written <= units {
        if units > 0 && written == units {
            at -= 1;
            buf[at] = b'.';
        }
        at -= 1;
        buf[at] = b'0' + (digits % 10) as u8;
        digits /= 10;
        written += 1;
    }
    if minor < 0 {
        at -= 1;
        buf[at] = b'-';
    }
    // Only ASCII digits, '.' and '-' were written.
    std::str::from_utf8(&buf[at..]).unwrap_or("0")
}

/// An amount serialized as its plain decimal string.
struct Amount(i64, u32);

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 32];
        serializer.serialize_str(format_minor(self.0, self.1, &mut buf))
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // The same shape as `MoneyWire`.
        use serde::ser::SerializeStruct;
        let mut wire = serializer.serialize_struct("MoneyWire", 2)?;
        wire.serialize_field("amount", &Amount(self.minor, self.currency.minor_units))?;
        wire.serialize_field("currency", &self.currency)?;
        wire.end()
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = MoneyWire::deserialize(deserializer)?;
        parse_plain_decimal(&wire.amount)
            .and_then(|amount| Money::new(amount, wire.currency))
            .map_err(serde::de::Error::custom)
    }
}

/// 10 to the power of the currency's minor units (at most 3, so it always fits).
fn minor_factor(currency: Currency) -> i64 {
    10_i64.pow(currency.minor_units)
}

/// Longest amount string accepted; `i64::MAX` minor units has 19 digits plus a decimal point.
const MAX_AMOUNT_CHARS: usize = 40;

fn parse_plain_decimal(s: &str) -> Result<Decimal, MoneyError> {
    let invalid = || MoneyError::InvalidAmount(s.chars().take(MAX_AMOUNT_CHARS).collect());
    if s.len() > MAX_AMOUNT_CHARS {
        return Err(invalid());
    }
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int_part, frac_part) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int_part) || !frac_part.is_none_or(all_digits) {
        return Err(invalid());
    }
    let value = Decimal::from_str_exact(digits).map_err(|_| invalid())?;
    if negative && !value.is_zero() {
        return Err(MoneyError::Negative);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_decimal_parser_rejects_everything_but_digits_and_one_point() {
        for bad in [
            "", ".", "1.", ".5", "1e3", "+1", " 1", "1 ", "1,00", "1.2.3", "0x10", "--1",
        ] {
            assert!(
                matches!(parse_plain_decimal(bad), Err(MoneyError::InvalidAmount(_))),
                "{bad:?} should be invalid"
            );
        }
        assert_eq!(parse_plain_decimal("-0"), Ok(Decimal::ZERO));
        assert_eq!(parse_plain_decimal("-1.5"), Err(MoneyError::Negative));
        assert_eq!(parse_plain_decimal("007.10"), Ok(Decimal::new(710, 2)));
    }
}

#[cfg(test)]
mod wire_tests {
    use super::*;

    #[test]
    fn money_travels_as_an_amount_string_and_a_currency_and_round_trips() {
        let cases = [
            ("12.50", "EUR"),
            ("0", "JPY"),
            ("3.999", "KWD"),
            ("1000000.01", "USD"),
        ];
        for (amount, currency) in cases {
            let m = Money::parse(amount, currency).expect("valid");
            let json = serde_json::to_value(&m).expect("serialize");
            assert_eq!(
                json,
                serde_json::json!({ "amount": m.amount().to_string(), "currency": currency })
            );
            let text = serde_json::to_string(&m).expect("serialize");
            assert_eq!(serde_json::from_str::<Money>(&text).expect("parse"), m);
        }
    }

    #[test]
    fn amounts_are_written_like_decimal_display_at_the_edges() {
        let mut buf = [0u8; 32];
        for (minor, units, text) in [
            (0, 2, "0.00"),
            (5, 2, "0.05"),
            (-5, 2, "-0.05"),
            (2990, 2, "29.90"),
            (7, 0, "7"),
            (0, 0, "0"),
            (1000, 3, "1.000"),
            (i64::MAX, 2, "92233720368547758.07"),
            (i64::MIN, 3, "-9223372036854775.808"),
        ] {
            assert_eq!(format_minor(minor, units, &mut buf), text);
        }
    }

    proptest::proptest! {
        #[test]
        fn amounts_are_written_exactly_like_decimal_display(minor in proptest::num::i64::ANY, units in 0u32..=3) {
            let mut buf = [0u8; 32];
            proptest::prop_assert_eq!(
                format_minor(minor, units, &mut buf),
                Decimal::new(minor, units).to_string()
            );
        }
    }
}
