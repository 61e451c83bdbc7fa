//! The query parameters the read endpoints share: paging (`limit`, `cursor`) and
//! read-your-writes (`consistency`), the one way a handler reads a page of a read model, and the
//! list answers it makes of that page.

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::Json;
use commands::Consistency;
use projections::catalog::ProductView;
use projections::notifications::NotificationView;
use projections::order_history::OrderView;
use projections::support::SupportOrderView;
use projections::{Page, Projection, ReadModelStore};
use serde::{Deserialize, Serialize};
use std::future::Future;
use utoipa::{IntoParams, ToSchema};

/// Default and largest page of list endpoints.
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 500;

pub fn limit(requested: Option<usize>) -> usize {
    requested.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
}

/// Where the next page of a list starts: a list answer's `next_cursor`, passed back as
/// `?cursor=`. Opaque to clients (the hex of the last item's sort key).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Cursor(String);

impl Cursor {
    pub fn of(sort_key: String) -> String {
        hex::encode(sort_key)
    }

    pub fn key(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Cursor {
    type Error = &'static str;

    fn try_from(s: String) -> Result<Self, &'static str> {
        const INVALID: &str = "not a cursor this API gave out";
        if s.is_empty() || s.len() > 2_048 {
            return Err(INVALID);
        }
        let bytes = hex::decode(&s).map_err(|_| INVALID)?;
        String::from_utf8(bytes).map(Cursor).map_err(|_| INVALID)
    }
}

/// Query parameters of list endpoints over projections. A list with filters takes them as a
/// second query struct beside this one, so neither refuses the other's fields: unknown
/// parameters are refused before the handler, by [`crate::openapi::reject_undocumented_query`].
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// At most this many items (default 50, at most 500).
    #[param(maximum = 500)]
    pub limit: Option<usize>,
    /// The previous page's `next_cursor`: this page starts after it.
    #[param(value_type = Option<crate::schema::CursorToken>)]
    pub cursor: Option<Cursor>,
    /// Read-your-writes: a command answer's `consistency` token. The query waits (at most `--consistency-wait`, 2 s by default)
    /// until this read model reflects that write.
    #[param(value_type = Option<crate::schema::ConsistencyToken>)]
    pub consistency: Option<Consistency>,
}

impl ListQuery {
    /// Waits until `projection` reflects the `consistency` token (if any), then reads the page
    /// asked for with `read(models, limit, after)` and answers it as the list `L`: its items and
    /// the cursor of the next page, if any.
    pub async fn read_page<'a, L, T, E, F>(
        &'a self,
        state: &'a AppState,
        projection: &dyn Projection,
        read: impl FnOnce(&'a dyn ReadModelStore, usize, Option<&'a str>) -> F,
    ) -> ApiResult<Json<L>>
    where
        L: From<Listed<T>>,
        F: Future<Output = Result<Page<T>, E>>,
        ApiError: From<E>,
    {
        state
            .read_after(projection, self.consistency.as_ref())
            .await;
        let after = self.cursor.as_ref().map(Cursor::key);
        let page = read(state.models.as_ref(), limit(self.limit), after).await?;
        Ok(Json(L::from(Listed {
            items: page.items,
            next_cursor: page.next.map(Cursor::of),
        })))
    }
}

/// A page as a list endpoint answers it: the items and the next page's cursor.
pub struct Listed<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Declares the answers of list endpoints: each names its items its own way, beside
/// `next_cursor`.
macro_rules! list_answers {
    ($($name:ident { $items:ident: $item:ty })+) => {
        $(
            #[derive(Debug, Serialize, ToSchema)]
            pub struct $name {
                pub $items: Vec<$item>,
                /// Pass as `cursor` for the next page; `null` on the last one.
                pub next_cursor: Option<String>,
            }

            impl From<Listed<$item>> for $name {
                fn from(page: Listed<$item>) -> Self {
                    Self {
                        $items: page.items,
                        next_cursor: page.next_cursor,
                    }
                }
            }
        )+
    };
}

list_answers! {
    OrderList { orders: OrderView }
    NotificationList { notifications: NotificationView }
    SupportOrderList { orders: SupportOrderView }
    ProductList { products: ProductView }
}

/// Query parameters of single-item reads over projections.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReadQuery {
    /// Read-your-writes: a command answer's `consistency` token. The query waits (at most `--consistency-wait`, 2 s by default)
    /// until this read model reflects that write.
    #[param(value_type = Option<crate::schema::ConsistencyToken>)]
    pub consistency: Option<Consistency>,
}

impl ReadQuery {
    /// Waits until `projection` reflects the `consistency` token, if any (see
    /// [`AppState::read_after`]).
    pub async fn wait_for(&self, state: &AppState, projection: &dyn Projection) {
        state
            .read_after(projection, self.consistency.as_ref())
            .await;
    }
}
