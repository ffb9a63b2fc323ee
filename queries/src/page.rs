//! The list vocabulary: one validated page request, one page, one keyset condition.

use crate::cursor::Cursor;

/// Page size when the client gives none, and the largest it may ask for (API.md).
pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

/// `?limit=&cursor=` of a list, validated: every list accepts and refuses the same values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// 1..=[`MAX_LIMIT`].
    pub limit: u32,
    /// The page starts strictly beyond this cursor; `None` = the first page.
    pub after: Option<Cursor>,
}

/// Why a page request was refused, naming the parameter at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    #[error("limit must be an integer from 1 to {MAX_LIMIT}")]
    Limit,
    #[error("cursor is invalid; pass the next_cursor of a previous page of this list")]
    Cursor,
}

impl PageError {
    /// The query parameter at fault.
    pub fn field(&self) -> &'static str {
        match self {
            PageError::Limit => "limit",
            PageError::Cursor => "cursor",
        }
    }
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest {
            limit: DEFAULT_LIMIT,
            after: None,
        }
    }
}

impl PageRequest {
    /// Parses the two query parameters as the client sent them (text).
    pub fn parse(limit: Option<&str>, cursor: Option<&str>) -> Result<PageRequest, PageError> {
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(s) => s
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or(PageError::Limit)?,
        };
        let after = cursor
            .map(|c| Cursor::decode(c).ok_or(PageError::Cursor))
            .transpose()?;
        Ok(PageRequest { limit, after })
    }

    /// A first page of `limit` items (clamped to the valid range).
    pub fn first(limit: u32) -> PageRequest {
        PageRequest {
            limit: limit.clamp(1, MAX_LIMIT),
            after: None,
        }
    }

    /// How many rows to fetch: one more than the page, to know whether another page follows.
    pub fn fetch(&self) -> i64 {
        i64::from(self.limit) + 1
    }
}

/// One page of a list; `next_cursor` is `None` on the last page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Cuts the `limit + 1` rows fetched into a page and the cursor of its last item.
    pub fn cut(mut rows: Vec<T>, req: &PageRequest, key: impl Fn(&T) -> Cursor) -> Page<T> {
        let more = rows.len() > req.limit as usize;
        rows.truncate(req.limit as usize);
        let next_cursor = if more {
            rows.last().map(|r| key(r).encode())
        } else {
            None
        };
        Page {
            items: rows,
            next_cursor,
        }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}

/// The direction a list runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    NewestFirst,
    OldestFirst,
}

/// The keyset condition of a page after `req.after` (empty on the first page): rows whose
/// `(at, id)` lies beyond the cursor, as a row-value comparison — the form a `(…, at, id)`
/// index serves directly on PostgreSQL (and SQLite) — bound as parameters `$first`, `$first+1`.
pub fn keyset(req: &PageRequest, at: &str, id: &str, order: Order, first: usize) -> String {
    if req.after.is_none() {
        return String::new();
    }
    let op = match order {
        Order::NewestFirst => "<",
        Order::OldestFirst => ">",
    };
    format!("AND ({at}, {id}) {op} (${first}, ${})", first + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn parses_and_refuses_the_same_way_for_every_list() {
        assert_eq!(PageRequest::parse(None, None), Ok(PageRequest::default()));
        assert_eq!(
            PageRequest::parse(Some("100"), None).map(|p| p.limit),
            Ok(100)
        );
        for bad in ["0", "101", "ten", "-1", "", "1.5"] {
            assert_eq!(
                PageRequest::parse(Some(bad), None),
                Err(PageError::Limit),
                "{bad}"
            );
        }
        assert_eq!(PageRequest::parse(None, Some("zz")), Err(PageError::Cursor));
        let c = Cursor {
            at: "2026-11-23T13:07:41.123456Z".into(),
            id: Uuid::now_v7(),
        };
        assert_eq!(
            PageRequest::parse(Some("5"), Some(&c.encode())),
            Ok(PageRequest {
                limit: 5,
                after: Some(c)
            })
        );
    }

    #[test]
    fn cut_keeps_the_limit_and_points_at_the_last_item() {
        let req = PageRequest::first(2);
        let key = |n: &u128| Cursor {
            at: "2026-11-23T13:07:41.123456Z".into(),
            id: Uuid::from_u128(*n),
        };
        let page = Page::cut(vec![1, 2, 3], &req, key);
        assert_eq!(page.items, vec![1, 2]);
        assert_eq!(page.next_cursor, Some(key(&2).encode()));
        let last = Page::cut(vec![1, 2], &req, key);
        assert_eq!(last.next_cursor, None);
    }

    #[test]
    fn keyset_is_a_row_value_comparison() {
        let mut req = PageRequest::first(5);
        assert_eq!(keyset(&req, "a", "b", Order::NewestFirst, 3), "");
        req.after = Some(Cursor {
            at: "2026-11-23T13:07:41.123456Z".into(),
            id: Uuid::nil(),
        });
        assert_eq!(
            keyset(&req, "p.at", "p.id", Order::NewestFirst, 3),
            "AND (p.at, p.id) < ($3, $4)"
        );
        assert_eq!(
            keyset(&req, "at", "id", Order::OldestFirst, 2),
            "AND (at, id) > ($2, $3)"
        );
    }
}
