//! SQL identifiers (table and column names): validated against a conservative character set and
//! always quoted with backticks, so a name from stream metadata or a record can never change the
//! meaning of a statement.

use std::fmt;

/// The longest identifier MySQL and MariaDB accept.
pub const MAX_IDENT_LEN: usize = 64;

/// A validated table or column name: 1 to 64 characters of `[A-Za-z0-9_$]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ident(String);

/// Why a name is not accepted as an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentError {
    /// The name is empty.
    #[error("must not be empty")]
    Empty,
    /// The name is longer than [`MAX_IDENT_LEN`].
    #[error("longer than {MAX_IDENT_LEN} characters")]
    TooLong,
    /// The name holds a character outside `[A-Za-z0-9_$]`.
    #[error("only letters, digits, `_` and `$` are allowed in a table or column name")]
    BadCharacter,
}

impl Ident {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, IdentError> {
        if name.is_empty() {
            return Err(IdentError::Empty);
        }
        if name.len() > MAX_IDENT_LEN {
            return Err(IdentError::TooLong);
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
        {
            return Err(IdentError::BadCharacter);
        }
        Ok(Self(name.to_owned()))
    }

    /// The bare name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name quoted for SQL: `` `name` ``.
    pub fn quoted(&self) -> Quoted<'_> {
        Quoted(&self.0)
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An identifier as SQL text, with backticks (the characters allowed never need escaping).
#[derive(Debug, Clone, Copy)]
pub struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`", self.0)
    }
}

/// Validates every name of `names` (for a parameter named `field`), refusing duplicates.
pub fn ident_list(
    field: &str,
    names: &[String],
) -> Result<Vec<Ident>, kps_connector_core::ConnectorError> {
    let mut out: Vec<Ident> = Vec::with_capacity(names.len());
    for name in names {
        let ident = Ident::new(name).map_err(|e| {
            kps_connector_core::ConnectorError::invalid(field, format!("{}: {e}", shown(name)))
        })?;
        if out.contains(&ident) {
            return Err(kps_connector_core::ConnectorError::invalid(
                field,
                format!("{} is listed twice", shown(name)),
            ));
        }
        out.push(ident);
    }
    Ok(out)
}

/// A name as shown in an error message: debug-quoted and cut to a sane length.
pub fn shown(name: &str) -> String {
    let cut: String = name.chars().take(MAX_IDENT_LEN).collect();
    if cut.len() < name.len() {
        format!("{cut:?}...")
    } else {
        format!("{cut:?}")
    }
}

/// Quotes a name read from the database's own catalog (information_schema), which may hold any
/// character: backticks inside are doubled, as MySQL's quoting rules require.
pub fn quote_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('`');
    for c in name.chars() {
        if c == '`' {
            out.push('`');
        }
        out.push(c);
    }
    out.push('`');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_accepted_and_quoted() {
        let id = Ident::new("orders_2024$x").unwrap();
        assert_eq!(id.quoted().to_string(), "`orders_2024$x`");
        assert!(Ident::new(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn injection_attempts_are_refused() {
        for bad in [
            "x`; DROP TABLE y",
            "x`",
            "a b",
            "a.b",
            "a;b",
            "a'b",
            "a\"b",
            "a--",
            "ä",
            "a\0",
        ] {
            assert_eq!(Ident::new(bad), Err(IdentError::BadCharacter), "{bad}");
        }
        assert_eq!(Ident::new(""), Err(IdentError::Empty));
        assert_eq!(Ident::new(&"a".repeat(65)), Err(IdentError::TooLong));
    }

    #[test]
    fn lists_refuse_duplicates() {
        let names = vec!["a".to_owned(), "b".to_owned(), "a".to_owned()];
        assert!(ident_list("columns", &names).is_err());
        assert_eq!(ident_list("columns", &names[..2]).unwrap().len(), 2);
    }

    #[test]
    fn catalog_names_are_escaped() {
        assert_eq!(quote_name("odd`name"), "`odd``name`");
        assert_eq!(quote_name("a b"), "`a b`");
    }
}
